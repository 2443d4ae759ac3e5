"""Stage helpers of flows/tasks.py that need no server: demo data generation and the loader context."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "configs" / "demo" / "demo_seg.py"


def _demo_cfg(data_dir: Path, *extra: str):
    from antgo.config import Config

    options = [f"data.{split}.dir={data_dir}" for split in ("train", "val", "test")]
    return Config.fromfile(DEMO, cfg_options=[*options, *extra])


@pytest.mark.slow  # writes the whole demo set (a few seconds)
def test_demo_config_generates_missing_demo_data_once(tmp_path):
    from antgo.data.datasets.demo import MANIFEST
    from flows.tasks import ensure_demo_data

    data_dir = tmp_path / "demo_voc"
    cfg = _demo_cfg(data_dir)
    assert ensure_demo_data(cfg, DEMO) == [str(data_dir)]
    assert (data_dir / MANIFEST).is_file()
    assert ensure_demo_data(cfg, DEMO) == []  # complete: nothing to do
    other = tmp_path / "not_demo.py"
    other.write_text(DEMO.read_text())
    assert ensure_demo_data(_demo_cfg(tmp_path / "elsewhere"), other) == []  # only configs/demo/ configs


def test_loader_context_is_set_only_for_loaders_with_workers(tmp_path):
    from flows.tasks import set_loader_context

    workers = "data.train_dataloader.workers_per_gpu=1"
    cfg = _demo_cfg(tmp_path, workers, "data.val_dataloader.workers_per_gpu=0")
    set_loader_context(cfg, "fork")
    assert cfg.data.train_dataloader.multiprocessing_context == "fork"
    assert "multiprocessing_context" not in cfg.data.val_dataloader
    cfg = _demo_cfg(tmp_path, workers, "+data.train_dataloader.multiprocessing_context=spawn")
    set_loader_context(cfg, "fork")
    assert cfg.data.train_dataloader.multiprocessing_context == "spawn"  # the config wins
    cfg = _demo_cfg(tmp_path, workers)
    set_loader_context(cfg, None)
    assert "multiprocessing_context" not in cfg.data.train_dataloader
