"""Two-process DistributedDataParallel training on CPU (gloo), launched with torch.distributed.run."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

PROBE = '''
import json, os
import torch
from antgo.engine.hooks import Hook
from antgo.registry import HOOKS

@HOOKS.register_module()
class ParamProbe(Hook):
    """Writes, per rank, the iterations run and a checksum of the weights after training."""

    def __init__(self, out):
        self.out = out

    def after_run(self, trainer):
        total = float(sum(p.double().sum() for p in trainer.model.parameters()))
        with open(os.path.join(self.out, f"rank{trainer.rank}.json"), "w") as f:
            json.dump({"iter": trainer.iter, "checksum": total, "world": trainer.world_size,
                       "sampler": type(trainer.train_loader.sampler).__name__}, f)
'''


def test_two_cpu_ranks_train_in_step(tiny_seg_cfg: dict, tmp_path: Path, train_two_ranks: Any) -> None:
    ranks = train_two_ranks(tiny_seg_cfg, tmp_path, PROBE, dict(type="ParamProbe", out=str(tmp_path)),
                            "--max-epochs", "2")
    # 12 train images split over 2 ranks, batch 4: 2 iterations per epoch on each rank
    assert [r["iter"] for r in ranks] == [4, 4] and {r["world"] for r in ranks} == {2}
    assert ranks[0]["sampler"] == "DistributedSampler"
    assert abs(ranks[0]["checksum"] - ranks[1]["checksum"]) < 1e-6  # gradients were all-reduced
    ckpt = torch.load(tmp_path / "work" / "latest.pth", weights_only=False)
    assert ckpt["meta"]["iter"] == 4 and (tmp_path / "work" / "best.json").is_file()
