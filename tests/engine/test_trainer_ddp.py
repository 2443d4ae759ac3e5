"""Two-process DistributedDataParallel training on CPU (gloo), launched with torch.distributed.run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]

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


def test_two_cpu_ranks_train_in_step(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    import json

    (tmp_path / "ddp_probe_plugin.py").write_text(PROBE)
    tiny_seg_cfg["custom_imports"] = dict(imports=["ddp_probe_plugin"])
    tiny_seg_cfg["custom_hooks"] = [dict(type="ParamProbe", out=str(tmp_path))]
    cfg = tmp_path / "ddp_cfg.py"
    cfg.write_text("\n".join(f"{k} = {v!r}" for k, v in tiny_seg_cfg.items()) + "\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}", OMP_NUM_THREADS="1", ANTGO_PROGRESS="0")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "antgo",
         "train", str(cfg), "--work-dir", str(tmp_path / "work"), "--device", "cpu", "--max-epochs", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    # 12 train images split over 2 ranks, batch 4: 2 iterations per epoch on each rank
    assert [r["iter"] for r in ranks] == [4, 4] and {r["world"] for r in ranks} == {2}
    assert ranks[0]["sampler"] == "DistributedSampler"
    assert abs(ranks[0]["checksum"] - ranks[1]["checksum"]) < 1e-6  # gradients were all-reduced
    ckpt = torch.load(tmp_path / "work" / "latest.pth", weights_only=False)
    assert ckpt["meta"]["iter"] == 4 and (tmp_path / "work" / "best.json").is_file()
