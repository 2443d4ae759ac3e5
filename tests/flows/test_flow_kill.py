"""A flow script killed mid-training: no temporary Prefect server is left behind (SIGTERM: stopped by the
script; ``kill -9``: by the kernel, PR_SET_PDEATHSIG), and its MLflow runs end KILLED: by the script itself on
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
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="90",
               # a cleanup slowed down by a loaded machine is finished by the forced path well within 20 s
               ANTGO_TERM_GRACE_S="5")
    return env, home


def _start_flow(processes: Any, env: dict[str, str], folder: Path, config: Path, uri: str, experiment: str,
                *extra: str) -> tuple[subprocess.Popen, Path]:
    log = folder / f"{experiment}-{len(processes.started)}.log"
    proc = processes.start([sys.executable, FLOW, str(config), "--work-dir", str(folder / "wd"), "--max-epochs",
                            "500", "--tracking-uri", uri, "--experiment", experiment, "--device", "cpu",
                            "--num-vis", "0", *extra], log, env=env, cwd=folder)
    return proc, log


def _server_of(env: dict[str, str], proc: subprocess.Popen) -> int:
    """The pid of the temporary Prefect server that ``proc`` started (from its pidfile)."""
    records = [json.loads(r.read_text()) for r in (Path(env["PREFECT_HOME"]) / "antgo-servers").glob("*.json")]
    (server,) = [r["server_pid"] for r in records if r["parent_pid"] == proc.pid]
    assert process_alive(server)
    return server


def _children(mlflow_store: Any, parent: Any) -> dict[str, Any]:
    runs = mlflow_store.client().search_runs([parent.info.experiment_id],
                                             filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return {r.data.tags.get("antgo.stage", r.info.run_name): r for r in runs}  # run names are "<parent>/<stage>"


def test_killed_flows_leave_no_server_and_no_running_mlflow_runs(tmp_path, flow_env, processes, make_tiny_config,
                                                                 mlflow_store):
    """kill -9 mid-training, then ``--resume latest`` (which closes the killed runs), then SIGTERM to the resume."""
    env, home = flow_env
    config = make_tiny_config(tmp_path / "cfg", model_name="tiny-kill")
    uri, experiment = mlflow_store.uri, "flow-kill"

    # 1. kill -9 after the first checkpoint: the kernel stops the temporary server; nobody can close the runs
    first, log = _start_flow(processes, env, tmp_path, config, uri, experiment)
    wait_for("first checkpoint", lambda: list((tmp_path / "wd").rglob("latest.pth")), 180, first, log)
    first_server = _server_of(env, first)
    first.kill()
    first.wait(timeout=30)
    wait_for("server exit after kill -9", lambda: not process_alive(first_server), 15)
    (killed,) = mlflow_store.pipeline_runs(experiment)
    assert killed.info.status == "RUNNING"

    # 2. the resume's start marks them KILLED, with the reason, before it trains
    second, log = _start_flow(processes, env, tmp_path, config, uri, experiment, "--resume", "latest")
    resumed = wait_for("the resume's train run", lambda: [
        r for r in mlflow_store.pipeline_runs(experiment)[1:] if "train" in _children(mlflow_store, r)], 180,
        second, log)[0]
    old = mlflow_store.client().get_run(killed.info.run_id)
    assert old.info.status == "KILLED" and "ended without closing this run" in old.data.tags["error"]
    assert _children(mlflow_store, old)["train"].info.status == "KILLED"
    assert {r.info.status for r in _children(mlflow_store, old).values()} == {"FINISHED", "KILLED"}

    # 3. SIGTERM to the resume (the script only, not its process group): out in seconds, its own runs KILLED
    second_server = _server_of(env, second)
    start = time.monotonic()
    second.send_signal(signal.SIGTERM)
    returncode = second.wait(timeout=60)
    assert time.monotonic() - start < 20, f"SIGTERM took {time.monotonic() - start:.1f} s"
    assert returncode == 143, log.read_text()[-3000:]  # 128 + SIGTERM, after the cleanup ran
    wait_for("server exit after SIGTERM", lambda: not process_alive(second_server), 15)
    resumed = mlflow_store.client().get_run(resumed.info.run_id)
    assert resumed.info.status == "KILLED", resumed.data.tags.get("error")
    assert _children(mlflow_store, resumed)["train"].info.status == "KILLED"
    assert not list((home / "antgo-servers").glob("*.json"))  # no server records left


NATIVE_HANG_PLUGIN = '''
import ctypes, pathlib
from antgo.engine.hooks import Hook
from antgo.registry import HOOKS

@HOOKS.register_module()
class HangInNativeCode(Hook):
    """After the first epoch: say so, then block in a native call that no signal interrupts."""
    def __init__(self, marker):
        self.marker = marker

    def after_epoch(self, trainer):
        mutex = ctypes.create_string_buffer(64)  # zeroed: a default (non-recursive) pthread mutex
        libc = ctypes.CDLL(None)
        libc.pthread_mutex_lock(mutex)
        pathlib.Path(self.marker).write_text("hanging")
        libc.pthread_mutex_lock(mutex)  # the same thread again: blocks for good
'''


def test_sigterm_ends_a_flow_whose_main_thread_is_stuck_in_native_code(tmp_path, flow_env, processes,
                                                                       make_tiny_config, mlflow_store):
    """No Python handler can run in a main thread blocked in native code: the SIGTERM guard still ends the
    script after the grace period, with 143, the temporary server stopped and the MLflow runs KILLED."""
    env, home = flow_env
    (tmp_path / "native_hang_plugin.py").write_text(NATIVE_HANG_PLUGIN)
    env = dict(env, ANTGO_TERM_GRACE_S="3",
               PYTHONPATH=os.pathsep.join(p for p in (str(tmp_path), env.get("PYTHONPATH")) if p))
    config = make_tiny_config(tmp_path / "cfg", model_name="tiny-native-hang")
    marker = tmp_path / "hanging"
    with config.open("a") as f:
        f.write(f"\ncustom_imports = dict(imports=['native_hang_plugin'])\n"
                f"custom_hooks = [dict(type='HangInNativeCode', marker={str(marker)!r})]\n")
    experiment = "flow-native-hang"
    proc, log = _start_flow(processes, env, tmp_path, config, mlflow_store.uri, experiment)
    wait_for("the hook's native hang", marker.exists, 180, proc, log)
    server = _server_of(env, proc)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    returncode = proc.wait(timeout=60)
    elapsed = time.monotonic() - start
    assert returncode == 143, log.read_text()[-3000:]
    assert 3 <= elapsed < 20, f"SIGTERM took {elapsed:.1f} s with a grace period of 3 s"
    assert "the cleanup did not finish within 3 s: forced exit" in log.read_text()
    wait_for("server exit after the forced exit", lambda: not process_alive(server), 15)
    assert not list((home / "antgo-servers").glob("*.json"))
    (run,) = mlflow_store.pipeline_runs(experiment)
    assert run.info.status == "KILLED" and "did not finish its cleanup" in run.data.tags["error"], run.data.tags
    assert _children(mlflow_store, run)["train"].info.status == "KILLED"


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
