"""Replaying a run folder's spool (what a tracking outage kept) into a real SQLite MLflow store."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from antgo.tracking.runs import PipelineTracker, TrackingContext
from antgo.tracking.transport import SPOOL_NAME

REPO = Path(__file__).resolve().parents[2]


def _closed_port_uri() -> str:
    with socket.socket() as s:  # bound, then closed: connections are refused at once
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def _outage(mlflow_store, run_dir: Path, experiment: str) -> tuple[str, str, dict]:
    """A pipeline's parent and training runs exist in the store; then everything is logged while the store is
    down, so it lands in the spool. Returns (parent id, child id, summary)."""
    live = PipelineTracker.start(experiment, "pipe", tracking_uri=mlflow_store.uri)
    child = live.start_child("train")
    live.close()
    down = PipelineTracker(TrackingContext(_closed_port_uri(), live.ctx.experiment_id, live.parent_run_id,
                                           str(run_dir / SPOOL_NAME)))
    for step in range(1, 6):
        down.log_metrics(child, {"loss": 1.0 / step, "lr": 0.1}, step=step)
    down.log_params(child, {"optimizer.lr": 0.1, "model.type": "EncoderDecoder"})
    down.set_tags(child, {"antgo.best_metric": "miou"})
    (run_dir / "output").mkdir(parents=True)
    (run_dir / "output" / "best.pth").write_bytes(b"weights")
    down.log_artifact(child, run_dir / "output" / "best.pth", "checkpoints")
    down.log_dict(child, {"miou": 0.5}, "eval/metrics.json")
    assert down.start_child("export") is None  # cannot be repeated: this run never existed
    down.end(child)
    down.end(live.parent_run_id, RuntimeError("export failed"))
    lines = down.close(timeout=5)
    summary = {"run_dir": str(run_dir), "tracking_uri": mlflow_store.uri, "tracking_undelivered": lines}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return live.parent_run_id, child, summary


def test_replay_sends_the_spool_as_it_was_logged_and_empties_it(mlflow_store, tmp_path):
    from antgo.tracking.replay import replay

    parent, child, summary = _outage(mlflow_store, tmp_path / "run", "replay-ok")
    run_dir = tmp_path / "moved" / "run"  # the folder was moved since: its artifacts are found at the new place
    shutil.move(tmp_path / "run", run_dir)
    logged = [json.loads(line) for line in (run_dir / SPOOL_NAME).read_text().splitlines()]
    stamps = sorted(m[3] for e in logged if e["kind"] == "metrics" for m in e["metrics"] if m[0] == "loss")

    result = replay(run_dir)  # the store named in summary.json

    client = mlflow_store.client()
    history = client.get_metric_history(child, "loss")
    assert [(m.step, m.value) for m in history] == [(s, 1.0 / s) for s in range(1, 6)]
    assert sorted(m.timestamp for m in history) == stamps  # the original timestamps, not the replay's
    run = client.get_run(child)
    assert run.data.params == {"optimizer.lr": "0.1", "model.type": "EncoderDecoder"}
    assert run.data.tags["antgo.best_metric"] == "miou" and run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(child)} | {a.path for a in client.list_artifacts(child, "eval")}
    assert {"checkpoints", "eval/metrics.json"} <= artifacts
    assert json.loads(Path(client.download_artifacts(child, "eval/metrics.json", str(tmp_path))).read_text()) \
        == {"miou": 0.5}
    parent_run = client.get_run(parent)
    assert parent_run.info.status == "FAILED" and parent_run.data.tags["error"] == "RuntimeError: export failed"
    assert [why for _, why in result.dropped] == ["'create child run export' is not repeated (it belonged to the "
                                                  "live pipeline)"]
    assert not result.failed and not (run_dir / SPOOL_NAME).exists()
    after = json.loads((run_dir / "summary.json").read_text())
    assert "tracking_undelivered" not in after and after["tracking_replay"]["delivered"] == len(result.delivered)
    assert replay(run_dir).delivered == []  # nothing left: a second replay sends nothing
    # a replay killed before it rewrote the spool sends everything again: metric values are not duplicated
    (run_dir / SPOOL_NAME).write_text("".join(json.dumps(e) + "\n" for e in logged))
    assert not replay(run_dir).failed
    assert len(client.get_metric_history(child, "loss")) == 5


def test_replay_into_the_wrong_store_sends_nothing_and_keeps_the_spool(mlflow_store, tmp_path):
    from antgo.tracking.replay import ReplayError, replay

    run_dir = tmp_path / "run"
    _, child, _ = _outage(mlflow_store, run_dir, "replay-wrong-store")
    before = (run_dir / SPOOL_NAME).read_text()
    other = "sqlite:///" + str(tmp_path / "other" / "mlflow.db")
    with pytest.raises(ReplayError, match=f"has no run .*{child}.*--tracking-uri"):
        replay(run_dir, other)
    with pytest.raises(ReplayError, match="unreachable.*nothing was sent"):
        replay(run_dir, _closed_port_uri())
    assert (run_dir / SPOOL_NAME).read_text() == before


def test_a_call_the_store_refuses_stays_in_the_spool(mlflow_store, tmp_path):
    run_dir = tmp_path / "run"
    _, child, _ = _outage(mlflow_store, run_dir, "replay-conflict")
    mlflow_store.client().log_param(child, "optimizer.lr", "0.5")  # MLflow refuses to change a logged param
    proc = subprocess.run([sys.executable, "-m", "antgo.tracking.replay", str(run_dir)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert f"still undelivered (kept in {run_dir / SPOOL_NAME}): run {child}: 2 params" in proc.stderr
    kept = [json.loads(line) for line in (run_dir / SPOOL_NAME).read_text().splitlines()]
    assert [e["kind"] for e in kept] == ["params"] and kept[0]["reason"].startswith("replay: MlflowException")
    assert mlflow_store.client().get_run(child).info.status == "FINISHED"  # the rest went through
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["tracking_undelivered"] == [f"run {child}: 2 params (optimizer.lr, model.type)"]


def test_a_resumed_pipeline_replays_the_spool_first_and_only_warns_when_it_cannot(mlflow_store, tmp_path, caplog):
    import logging

    from flows.tracking_mode import replay_earlier_outage

    run_dir = tmp_path / "run"
    _, child, _ = _outage(mlflow_store, run_dir, "replay-on-resume")
    flows_logger = logging.getLogger("antgo.flows")
    flows_logger.addHandler(caplog.handler)  # Prefect's logging setup may stop it from reaching the root
    try:
        replay_earlier_outage(run_dir, "sqlite:///" + str(tmp_path / "other.db"), reachable=True)
        assert (run_dir / SPOOL_NAME).is_file()  # a store without the runs: nothing sent, the spool stays
        assert any("has no run" in r.getMessage() and "antgo.tracking.replay" in r.getMessage()
                   for r in caplog.records if r.levelno == logging.WARNING)
        replay_earlier_outage(run_dir, mlflow_store.uri, reachable=True)
    finally:
        flows_logger.removeHandler(caplog.handler)
    assert not (run_dir / SPOOL_NAME).exists()
    assert mlflow_store.client().get_run(child).info.status == "FINISHED"
