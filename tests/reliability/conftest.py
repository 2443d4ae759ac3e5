"""A trained tiny run folder (session-scoped, copied per test) laid out like the seed config's:
``checkpoint_config.out_dir = evaluation.out_dir = './output/'``."""
from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.cases import Ctx


@pytest.fixture(scope="session")
def reliability_cfg(seg_cfg_factory: Any) -> dict[str, Any]:
    cfg = seg_cfg_factory(size=32, batch=4, max_epochs=1)
    cfg["checkpoint_config"] = dict(interval=1, out_dir="./output/")
    cfg["evaluation"] = dict(cfg["evaluation"], out_dir="./output/")
    return cfg


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, reliability_cfg: dict[str, Any]) -> Path:
    from antgo.engine import Trainer

    run = tmp_path_factory.mktemp("trained") / "run"
    trainer = Trainer(copy.deepcopy(reliability_cfg), work_dir=str(run), device="cpu")
    trainer.config_dataloader()
    trainer.config_model()
    trainer.start_train()
    assert (run / "output" / "best.pth").is_file() and (run / "output" / "latest.pth").is_file()
    return run


@pytest.fixture
def ctx(tmp_path: Path, mini_voc: Path, trained_run: Path, reliability_cfg: dict[str, Any]) -> Ctx:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    work = tmp_path / "case"
    work.mkdir()
    return Ctx(tmp=work, voc=mini_voc, run=run, cfg=copy.deepcopy(reliability_cfg))
