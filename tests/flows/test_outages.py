"""Tracking outages: an unreachable MLflow store at start fails fast (or degrades when tracking is optional);
a real ``mlflow server`` killed mid-training neither stops nor stalls the pipeline, and what it did not receive
is reported and kept in the run folder."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI",
                                                             "ANTGO_TRACKING")}
    env.update(DO_NOT_TRACK="true", PREFECT_SERVER_ANALYTICS_ENABLED="false", MLFLOW_DISABLE_TELEMETRY="true",
               PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO), **extra)
    return env


@pytest.fixture()
def antgo_warnings(caplog: pytest.LogCaptureFixture) -> Any:
    """WARNING records of the ``antgo`` loggers (Prefect's logging setup stops them from reaching the root)."""
    logger = logging.getLogger("antgo")
    logger.addHandler(caplog.handler)
    caplog.handler.setLevel(logging.WARNING)
    try:
        # a record may reach the handler twice (here and through the root logger when antgo propagates)
        yield lambda: [r.getMessage() for r in {id(r): r for r in caplog.records}.values()
                       if r.levelno >= logging.WARNING]
    finally:
        logger.removeHandler(caplog.handler)


def _interrupt_migration(db: Path, runs: int) -> None:
    """A real MLflow sqlite store with ``runs`` runs, then what a kill during a schema migration leaves: a
    ``_alembic_tmp_`` copy of a table (SQLite migrations are not transactional)."""
    import sqlite3
    from contextlib import closing

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.create_experiment("half-migrated", artifact_location=str(db.parent / "artifacts"))
    for _ in range(runs):
        client.set_terminated(client.create_run(experiment).info.run_id)
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE _alembic_tmp_trace_info (request_id VARCHAR(50) NOT NULL)")
        conn.commit()


@pytest.mark.parametrize("runs", [0, 2])
def test_a_store_left_half_migrated_fails_fast_naming_the_table_and_the_fix(tmp_path, make_tiny_config, capsys,
                                                                             runs):
    from flows.train_flow import main

    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    _interrupt_migration(db, runs)
    config = make_tiny_config(tmp_path / "cfg")
    assert main([str(config), "--work-dir", str(tmp_path / "wd"), "--tracking-uri", f"sqlite:///{db}"]) == 1
    err = capsys.readouterr().err
    assert f"MLflow store {db} was left half-migrated: _alembic_tmp_trace_info remain" in err
    if runs:
        assert "It holds 2 run(s): back the file up" in err and "`DROP TABLE _alembic_tmp_trace_info;` if " \
            "table trace_info exists, else `ALTER TABLE _alembic_tmp_trace_info RENAME TO trace_info;`" in err
    else:
        assert f"It holds no runs yet: delete {db} and run again." in err
    assert not (tmp_path / "wd").exists()  # refused before anything was created


def test_unreachable_server_fails_fast_naming_uri_and_fix(tmp_path, make_tiny_config, processes, capsys):
    from flows.train_flow import main

    config = make_tiny_config(tmp_path / "cfg")
    uri = f"http://127.0.0.1:{processes.free_port()}"  # nothing listens there
    args = [str(config), "--work-dir", str(tmp_path / "wd"), "--tracking-uri", uri]
    start = time.monotonic()
    assert main(args) == 1  # the script's whole path after its imports
    elapsed = time.monotonic() - start
    assert elapsed < 15, f"took {elapsed:.1f} s"
    err = capsys.readouterr().err
    assert f"MLflow tracking store {uri} is unreachable" in err
    assert "--tracking optional" in err and "mlflow=dict(tracking='optional')" in err
    assert not (tmp_path / "wd").exists()  # nothing created: no empty run folder
    # the script itself: exit status 1, the same message, no traceback (wall time includes its imports)
    result = subprocess.run([sys.executable, str(REPO / "flows" / "train_flow.py"), *args], env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"MLflow tracking store {uri} is unreachable" in result.stderr and "Traceback" not in result.stderr


def test_optional_tracking_degrades_and_keeps_the_run_folder(prefect_api, tmp_path, make_tiny_config,
                                                            processes, antgo_warnings):
    from flows.train_flow import antgo

    config = make_tiny_config(tmp_path / "cfg", model_name="tiny-offline")
    uri = f"http://127.0.0.1:{processes.free_port()}"
    start = time.monotonic()
    summary = antgo(config=str(config), work_dir=str(tmp_path / "wd"), tracking_uri=uri, num_vis=0,
                    device="cpu", cfg_options=["+mlflow.tracking=optional"])  # the config's key
    assert summary["status"] == "Completed" and summary["mlflow_run_id"] is None
    assert summary["tracking"] == "optional: not used"
    from flows.train_flow import format_summary

    printed = format_summary(summary)  # no dead MLflow link or UI hint
    assert "MLflow: not used (tracking optional)" in printed and "MLflow run:" not in printed
    warnings = antgo_warnings()
    assert [m for m in warnings if f"{uri} is unreachable" in m and "Tracking is optional" in m]
    assert len(warnings) == 1, warnings  # said once; no stage tries the store again
    run_dir = Path(summary["run_dir"])
    for name in ("config.py", "train.log", "summary.json", "output/best.pth", "tiny-offline.onnx",
                 "test/metrics.json"):
        assert (run_dir / name).is_file(), name
    assert time.monotonic() - start < 120


def _mlflow_server(processes: Any, root: Path) -> tuple[str, subprocess.Popen]:
    """A real ``mlflow server`` on the store in ``root`` (database and artifacts), on a free port."""
    port = processes.free_port()
    (root / "artifacts").mkdir(parents=True, exist_ok=True)
    log = root / f"server-{port}.log"
    proc = processes.start([str(VENV_BIN / "mlflow"), "server", "--backend-store-uri",
                            f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
                            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                           log, env=_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"))
    processes.wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=90, log=log)
    return f"http://127.0.0.1:{port}", proc


@pytest.fixture()
def doomed_mlflow_server(tmp_path, processes) -> tuple[str, subprocess.Popen]:
    """A real ``mlflow server`` of this test alone (the test kills it)."""
    return _mlflow_server(processes, tmp_path / "doomed")


@pytest.mark.slow
def test_server_killed_mid_training_neither_stops_nor_stalls_it(prefect_api, tmp_path, make_tiny_config,
                                                               doomed_mlflow_server, monkeypatch, antgo_warnings,
                                                               processes):
    from antgo.tracking.hooks import MlflowLoggerHook
    from antgo.tracking.transport import SPOOL_NAME
    from flows.train_flow import antgo, format_summary

    uri, server = doomed_mlflow_server
    killed_at: list[float] = []
    original = MlflowLoggerHook.after_epoch

    def kill_after_first_epoch(self: Any, trainer: Any) -> None:
        original(self, trainer)
        if trainer.epoch == 0:  # epochs 2 and 3 train with the server gone
            assert self.tracker.transport.flush(30)  # epoch 1 reached MLflow
            os.killpg(server.pid, signal.SIGKILL)  # the CLI and its uvicorn worker
            server.wait(timeout=30)
            killed_at.append(time.monotonic())

    monkeypatch.setattr(MlflowLoggerHook, "after_epoch", kill_after_first_epoch)
    config = make_tiny_config(tmp_path / "cfg", model_name="tiny-outage")
    summary = antgo(config=str(config), work_dir=str(tmp_path / "wd"), tracking_uri=uri, max_epochs=3,
                    num_vis=0, device="cpu", experiment="outage")
    after_kill = time.monotonic() - killed_at[0]
    assert summary["status"] == "Completed" and summary["epochs"] == 3 and summary["iters"] == 6
    assert after_kill < 60, f"the pipeline took {after_kill:.0f} s after the server died"
    undelivered = "\n".join(summary["tracking_undelivered"])
    assert "metric values (" in undelivered and "loss" in undelivered
    assert "artifacts (" in undelivered and "best.pth" in undelivered
    assert [m for m in antgo_warnings() if "did not receive everything" in m and "loss" in m]
    run_dir = Path(summary["run_dir"])
    entries = [json.loads(line) for line in (run_dir / SPOOL_NAME).read_text().splitlines()]
    loss_steps = sorted(m[2] for e in entries if e["kind"] == "metrics" for m in e["metrics"] if m[0] == "loss")
    assert loss_steps == [3, 4, 5, 6]  # the iterations of epochs 2-3, kept for a later upload
    assert json.loads((run_dir / "summary.json").read_text())["tracking_undelivered"] == summary["tracking_undelivered"]
    assert (run_dir / "output" / "latest.pth").is_file() and Path(summary["onnx_path"]).is_file()
    report = format_summary(summary)  # what the script prints at the end
    assert f"WARNING: MLflow did not receive (kept in {run_dir / SPOOL_NAME}):" in report
    assert summary["tracking_undelivered"][0] in report
    assert f"send it once the store is back: python -m antgo.tracking.replay {run_dir}" in report

    # the store is back (same database and artifacts, another port): the replay completes the training run
    from mlflow.tracking import MlflowClient

    revived, _ = _mlflow_server(processes, tmp_path / "doomed")
    replayed = subprocess.run([sys.executable, "-m", "antgo.tracking.replay", str(run_dir), "--tracking-uri", revived],
                              cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert replayed.returncode == 0, replayed.stderr
    train_run = next(e["run_id"] for e in entries
                     if e["kind"] == "metrics" and any(m[0] == "loss" for m in e["metrics"]))
    client = MlflowClient(tracking_uri=revived)
    assert [m.step for m in client.get_metric_history(train_run, "loss")] == [1, 2, 3, 4, 5, 6]
    assert client.get_run(train_run).info.status == "FINISHED"
    assert "best.pth" in json.dumps([a.path for a in client.list_artifacts(train_run, "checkpoints")])
    assert not (run_dir / SPOOL_NAME).exists()
