"""Engine test helpers: a two-process CPU DDP launch of ``antgo train`` through torch.distributed.run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _train_two_ranks(cfg: dict[str, Any], tmp_path: Path, plugin: str, hook: dict[str, Any],
                     *cli_args: str) -> list[dict[str, Any]]:
    """Write ``plugin`` (a module registering ``hook``) and the config, run ``antgo train`` on 2 gloo ranks;
    return the per-rank JSON the hook wrote as ``rank{r}.json`` in ``tmp_path``."""
    (tmp_path / "ddp_test_plugin.py").write_text(plugin)
    cfg = dict(cfg, custom_imports=dict(imports=["ddp_test_plugin"]), custom_hooks=[hook])
    cfg_file = tmp_path / "ddp_cfg.py"
    cfg_file.write_text("\n".join(f"{k} = {v!r}" for k, v in cfg.items()) + "\n")
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}", OMP_NUM_THREADS="1", ANTGO_PROGRESS="0")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "antgo",
         "train", str(cfg_file), "--work-dir", str(tmp_path / "work"), "--device", "cpu", *cli_args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture
def train_two_ranks() -> Any:
    """``train_two_ranks(cfg, tmp_path, plugin_source, hook_cfg, *cli_args) -> [rank0, rank1]`` JSON records."""
    return _train_two_ranks
