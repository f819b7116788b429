"""Run under torchrun by test_ddp.py: a short data-parallel training, then each process dumps its weights.

torchrun --standalone --nproc_per_node 2 tests/model/training/ddp_run.py RUN_DIR DATA
"""

import sys
from pathlib import Path

import torch.distributed as dist
from safetensors.torch import save_file

from model.training import distributed
from model.training.train import TrainConfig, Trainer


def main() -> None:
    run_dir, data = Path(sys.argv[1]), sys.argv[2]
    distributed.init()
    cfg = TrainConfig(model="tiny", data=data, batch=4, accum=2, stage1_steps=1, stage2_steps=2, r1_every=2,
                      ckpt_every=1000, sample_every=1000, log_every=1, device="cpu")  # fmt: skip
    trainer = Trainer(cfg, run_dir)
    trainer.run()
    weights = {f"{name}.{k}": v.contiguous() for name in ("G", "G_ema", "D")
               for k, v in getattr(trainer, name).state_dict().items()}  # fmt: skip
    save_file(weights, run_dir / f"rank{trainer.rank}.safetensors")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
