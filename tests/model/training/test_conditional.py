"""Class-conditional canonical generators (canonical.classes): labels drawn from each video's seed, the projection
on them and the label head in the discriminator, and training on labelled Moving MNIST."""

import pytest
import torch

from model.config import preset
from model.discriminator import Discriminator
from model.gendef import GenDeF
from model.training.train import Trainer
from tests.model.training.test_train import CARPHONE, changed, enter_stage2, snapshot, tiny_config


def conditional(classes: int = 10, per_image: int = 2):
    cfg = preset("tiny")
    cfg.canonical.classes, cfg.canonical.labels_per_image = classes, per_image
    return cfg


def test_labels_are_distinct_classes_drawn_evenly_from_the_generator():
    G = GenDeF(conditional()).canonical
    labels = G.random_labels(4000, torch.Generator().manual_seed(0))  # (4000, 10)
    assert set(labels.unique().tolist()) == {0.0, 1.0}
    assert (labels.sum(dim=1) == 2).all()  # two distinct digits in every image
    assert (labels.mean(dim=0) - 0.2).abs().max() < 0.03  # each digit in a fifth of the images
    assert torch.equal(labels, G.random_labels(4000, torch.Generator().manual_seed(0)))
    gen = torch.Generator().manual_seed(0)
    before = gen.get_state()
    assert GenDeF(preset("tiny")).canonical.random_labels(4, gen) is None
    assert torch.equal(gen.get_state(), before)  # an unconditional generator draws nothing


def test_a_conditional_models_labels_come_from_each_videos_seed_and_change_its_image():
    torch.manual_seed(0)
    model = GenDeF(conditional()).eval()
    torch.nn.init.normal_(model.canonical.mapping.embed.weight)  # as if trained: the labels matter
    together = model.sample([5, 6], [1, 2], 3)
    alone = model.sample([6], [2], 3)
    torch.testing.assert_close(alone.canonical[0], together.canonical[1], rtol=0, atol=0)
    labels = model.labels([5, 6, 5])
    assert torch.equal(labels[0], labels[2]) and (labels.sum(dim=1) == 2).all()
    assert model.labels([6]).tolist() == labels[1:2].tolist()
    # the same z and noise with other labels is another image: the labels reach the synthesis
    z, noise, _ = model._content(5)
    other = torch.roll(labels[:1], 1, dims=1)
    with torch.no_grad():
        image, _ = model.canonical(z, noise, labels[:1])
        moved, _ = model.canonical(z, noise, other)
    assert (image - moved).abs().mean() > 1e-3
    assert GenDeF(preset("tiny")).labels([5]) is None


def test_a_zero_projection_computes_the_unconditional_logits_and_labels_are_required():
    cfg = conditional()
    torch.manual_seed(0)
    plain = Discriminator(cfg.discriminator, cfg.resolution)
    torch.manual_seed(0)
    cond = Discriminator(cfg.discriminator, cfg.resolution, classes=10)
    clips, times = torch.rand(4, 3, 3, 32, 32) * 2 - 1, torch.tensor([[0.0, 2.0, 5.0]]).expand(4, -1)
    labels = GenDeF(cfg).canonical.random_labels(4, torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(cond(clips, times, labels), plain(clips, times))
        torch.nn.init.normal_(cond.label_embed.weight)
        assert not torch.allclose(cond(clips, times, labels), cond(clips, times, labels.roll(1, dims=1)))
    with pytest.raises(ValueError, match="takes labels"):
        cond(clips, times)
    with pytest.raises(ValueError, match="takes labels"):
        plain(clips, times, labels)
    with pytest.raises(ValueError, match="reads labels"):
        plain(clips, times, classify=True)
    logits, read = cond(clips, times, labels, classify=True)
    assert logits.shape == (4,) and read.shape == (4, 10)
    with pytest.raises(ValueError, match="at least 2"):  # it standardises its features over the batch
        cond(clips[:1], times[:1], labels[:1], classify=True)


def test_conditional_training_on_moving_mnist_learns_the_label_embeddings_in_both_stages(tmp_path):
    trainer = Trainer(tiny_config(data="mnist", model=conditional().to_dict()), tmp_path)
    head = snapshot(trainer.D.classifier)
    for _ in range(2):
        metrics = trainer.train_step()
    assert trainer.G.canonical.mapping.embed.weight.abs().sum() > 0
    assert trainer.D.label_embed.weight.abs().sum() > 0
    assert changed(head, trainer.D.classifier, "")  # the label head learns to read real images' labels
    assert metrics["label_d"] > 0 and metrics["label_g"] > 0  # ... and asks the canonical images for theirs
    before = snapshot(trainer.G)
    enter_stage2(trainer).cfg.canonical_freeze_steps = 0
    metrics = trainer.train_step()  # clips, the single-image term and R1 with labels
    assert metrics["loss_img"] > 0 and metrics["label_g"] > 0
    assert not torch.equal(before["canonical.mapping.embed.weight"], trainer.G.canonical.mapping.embed.weight)
    trainer.cfg.label_weight = 0  # the label head off: nothing reads labels, the projection still conditions
    metrics = trainer.train_step()
    assert metrics["label_d"] == 0 and metrics["label_g"] == 0


def test_a_conditional_model_trains_only_on_labelled_data(tmp_path):
    with pytest.raises(ValueError, match="labelled data"):
        Trainer(tiny_config(data=CARPHONE, model=conditional().to_dict()), tmp_path)
    with pytest.raises(ValueError, match="labelled data"):  # Moving MNIST frames hold two digits of ten
        Trainer(tiny_config(data="mnist", model=conditional(10, 1).to_dict()), tmp_path)
    with pytest.raises(ValueError, match="labels_per_image"):
        conditional(10, 11).__post_init__()
