"""A flow script killed mid-training: no temporary Prefect server is left behind (SIGTERM: stopped by the
script; ``kill -9``: by the kernel, PR_SET_PDEATHSIG), and its MLflow runs end KILLED — by the script itself on
SIGTERM, by the next start (here a ``--resume``) after ``kill -9``."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from antgo.tracking.lifecycle import process_alive

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FLOW = str(REPO / "flows" / "train_flow.py")


def wait_for(what: str, condition: Callable[[], Any], timeout: float, proc: subprocess.Popen | None = None,
             log: Path | None = None) -> Any:
    """Poll ``condition`` until it returns something truthy (bounded); fail early when ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"flow exited ({proc.returncode}) before {what}:\n"
                                 + (log.read_text()[-4000:] if log else ""))
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {timeout:.0f} s:\n" + (log.read_text()[-4000:] if log else ""))


@pytest.fixture(scope="module")
def flow_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path]:
    """Environment without PREFECT_API_URL (the script starts its temporary server) and its own PREFECT_HOME."""
    home = tmp_path_factory.mktemp("prefect_home_kill")
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI")}
    env.update(PREFECT_HOME=str(home), PYTHONUNBUFFERED="1", DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90")
    return env, home


def _start_training(processes: Any, env: dict[str, str], folder: Path, config: Path, uri: str,
                    experiment: str) -> tuple[subprocess.Popen, Path, int]:
    """The flow script, until its first checkpoint exists; returns it, its log and its server's pid."""
    log = folder / f"{experiment}.log"
    proc = processes.start([sys.executable, FLOW, str(config), "--work-dir", str(folder / "wd"), "--max-epochs",
                            "500", "--tracking-uri", uri, "--experiment", experiment, "--device", "cpu"],
                           log, env=env, cwd=folder)
    wait_for("first checkpoint", lambda: list((folder / "wd").rglob("latest.pth")), 180, proc, log)
    records = list((Path(env["PREFECT_HOME"]) / "antgo-servers").glob("*.json"))
    server = [json.loads(r.read_text()) for r in records if json.loads(r.read_text())["parent_pid"] == proc.pid]
    assert len(server) == 1, records
    assert process_alive(server[0]["server_pid"])
    return proc, log, server[0]["server_pid"]


def _pipeline_runs(mlflow_store: Any, experiment: str) -> list[Any]:
    client = mlflow_store.client()
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string="tags.`antgo.pipeline` = 'true'",
                              order_by=["attributes.start_time ASC"])


def _children(mlflow_store: Any, parent: Any) -> dict[str, Any]:
    runs = mlflow_store.client().search_runs([parent.info.experiment_id],
                                             filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return {r.info.run_name: r for r in runs}


def test_sigterm_stops_the_flow_its_server_and_closes_its_runs(tmp_path, flow_env, processes, make_tiny_config,
                                                               mlflow_store):
    env, _ = flow_env
    config = make_tiny_config(tmp_path / "cfg", model_name="tiny-term")
    proc, log, server_pid = _start_training(processes, env, tmp_path, config, mlflow_store.uri, "kill-term")
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)  # the script only, not its process group
    returncode = proc.wait(timeout=60)
    assert time.monotonic() - start < 20, f"SIGTERM took {time.monotonic() - start:.1f} s"
    assert returncode == 143, log.read_text()[-3000:]  # 128 + SIGTERM, after the cleanup ran
    wait_for("server exit", lambda: not process_alive(server_pid), 15)
    (parent,) = _pipeline_runs(mlflow_store, "kill-term")
    assert parent.info.status == "KILLED", parent.data.tags.get("error")
    assert _children(mlflow_store, parent)["train"].info.status == "KILLED"
    assert not list((Path(env["PREFECT_HOME"]) / "antgo-servers").glob(f"{server_pid}.json"))


def test_kill9_leaves_no_server_and_resume_closes_the_runs(tmp_path, flow_env, processes, make_tiny_config,
                                                          mlflow_store):
    import torch

    env, _ = flow_env
    config = make_tiny_config(tmp_path / "cfg", model_name="tiny-kill9")
    proc, log, server_pid = _start_training(processes, env, tmp_path, config, mlflow_store.uri, "kill-9")
    proc.kill()
    proc.wait(timeout=30)
    wait_for("server exit after kill -9", lambda: not process_alive(server_pid), 15)
    (killed,) = _pipeline_runs(mlflow_store, "kill-9")
    assert killed.info.status == "RUNNING"  # nobody could close it: the next start does

    latest = next((tmp_path / "wd").rglob("latest.pth"))
    epoch = int(torch.load(latest, map_location="cpu", weights_only=False)["meta"]["epoch"])
    result = subprocess.run([sys.executable, FLOW, str(config), "--work-dir", str(tmp_path / "wd"), "--resume",
                             "latest", "--max-epochs", str(epoch + 1), "--tracking-uri", mlflow_store.uri,
                             "--experiment", "kill-9", "--device", "cpu", "--num-vis", "0"],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    old, new = _pipeline_runs(mlflow_store, "kill-9")
    assert old.info.run_id == killed.info.run_id and new.info.status == "FINISHED"
    assert old.info.status == "KILLED" and "ended without closing this run" in old.data.tags["error"]
    assert {r.info.status for r in _children(mlflow_store, old).values()} <= {"FINISHED", "KILLED"}
    assert _children(mlflow_store, old)["train"].info.status == "KILLED"
    assert not list((Path(env["PREFECT_HOME"]) / "antgo-servers").glob("*.json"))  # no server records left


def test_next_start_reaps_a_server_whose_script_is_gone(tmp_path):
    """The fallback where the kernel does not stop it: a pidfile whose parent died names a server to stop."""
    from flows.server import reap_orphans

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (tmp_path / f"{server.pid}.json").write_text(json.dumps({"server_pid": server.pid, "parent_pid": gone.pid}))
        (tmp_path / f"{alive.pid}.json").write_text(json.dumps({"server_pid": alive.pid, "parent_pid": os.getpid()}))
        assert reap_orphans(tmp_path) == [server.pid]
        assert server.wait(timeout=15) is not None
        assert alive.poll() is None and (tmp_path / f"{alive.pid}.json").exists()  # its parent still runs
        assert not (tmp_path / f"{server.pid}.json").exists()
    finally:
        for proc in (server, alive):
            proc.kill()
            proc.wait()
