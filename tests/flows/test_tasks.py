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


@pytest.mark.slow  # one tiny training run (a few seconds)
def test_failed_training_keeps_its_log_and_metrics_in_the_failed_run(tmp_path, mlflow_store, make_tiny_config,
                                                                    monkeypatch):
    from antgo.tracking.hooks import MlflowLoggerHook
    from antgo.tracking.runs import PipelineTracker
    from flows import tasks

    def boom(self, trainer):
        raise RuntimeError("boom after the first epoch")

    monkeypatch.setattr(MlflowLoggerHook, "after_epoch", boom)
    config = make_tiny_config(tmp_path / "cfg")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    tracker = PipelineTracker.start("tasks-train-failure", "pipe", tracking_uri=mlflow_store.uri)
    with pytest.raises(RuntimeError, match="boom"):
        tasks.train.fn(str(config), str(run_dir), tracker.ctx.to_dict(), device="cpu")
    client = mlflow_store.client()
    (child,) = client.search_runs([tracker.ctx.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{tracker.parent_run_id}'")
    assert child.info.status == "FAILED" and "boom" in child.data.tags["error"]
    assert [a.path for a in client.list_artifacts(child.info.run_id, "train")] == ["train/train.log"]
    assert client.get_metric_history(child.info.run_id, "loss")  # flushed by after_run despite the error
