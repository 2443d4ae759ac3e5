"""The temporary Prefect server of ``python flows/train_flow.py`` when no ``PREFECT_API_URL`` is set.

Prefect would start one itself (a uvicorn child) and stop it from ``atexit``, which never runs after SIGTERM
or ``kill -9``: the server was re-parented to PID 1 and stayed. This module starts the same server, owned by the
flow script:

- on Linux the child asks the kernel for ``PR_SET_PDEATHSIG`` (SIGTERM) before it execs uvicorn, so it stops
  when the script dies, even by ``kill -9``;
- a pidfile in ``$PREFECT_HOME/antgo-servers/`` names it and its parent; the next start reaps servers whose
  parent is gone (the fallback where the kernel cannot do it: other systems, a parent thread that exited);
- a normal exit, an exception or SIGTERM (via the script's handler) stops it in ``finally``.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from antgo.tracking.lifecycle import process_alive, process_start_time
from flows.termination import on_forced_exit, sigterm_guard

logger = logging.getLogger("antgo.flows")

# Runs in the child before uvicorn: die with the parent (Linux), and not at all if the parent already died.
_LAUNCH = """
import ctypes, os, signal, sys
parent = int(sys.argv[1])
if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
if os.getppid() != parent:
    sys.exit(0)
os.execv(sys.executable, [sys.executable, "-m", "uvicorn", *sys.argv[2:]])
"""


def api_url_configured() -> bool:
    """True when Prefect already has a server to talk to (``PREFECT_API_URL``)."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def crash_flow_run(flow_run_id: str, message: str, api_url: str | None = None) -> None:
    """Set a still-running Prefect flow run Crashed (a pipeline whose process died, or the SIGTERM guard's forced
    exit); ``api_url`` names the server where this thread's Prefect settings do not (a guard's worker thread)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Crashed

    with temporary_settings(updates={PREFECT_API_URL: api_url}) if api_url else nullcontext(), \
            get_client(sync_client=True) as client:
        if client.read_flow_run(flow_run_id).state.is_running():
            client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)


def flow_run_cancelling(flow_run_id: str, timeout: float = 5.0) -> bool:
    """True when the Prefect flow run is being cancelled (a user's Cancel, ``prefect flow-run cancel``): its
    process got SIGTERM for that reason. False when it is not, or the API does not answer within ``timeout``."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_REQUEST_TIMEOUT, temporary_settings

    try:
        with temporary_settings(updates={PREFECT_API_REQUEST_TIMEOUT: timeout}), \
                get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state
    except Exception as exc:  # the status line then says "Stopped": nothing else depends on it
        logger.debug("could not read the state of flow run %s: %s", flow_run_id, exc)
        return False
    return state is not None and (state.is_cancelling() or state.is_cancelled())


def pid_dir() -> Path:
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home).expanduser() / "antgo-servers"


def _stop(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s; waits (bounded) until the process is gone."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:  # our own child: reap it; anyone else's: poll for its exit
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            except ChildProcessError:
                if not process_alive(pid, None):
                    return
            time.sleep(0.05)


def reap_orphans(folder: Path | None = None) -> list[int]:
    """Stop temporary servers whose flow script is gone (from their pidfiles); returns the stopped pids."""
    folder = folder or pid_dir()
    reaped = []
    for record in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            info = json.loads(record.read_text())
            server, parent = int(info["server_pid"]), int(info["parent_pid"])
        except (OSError, ValueError, KeyError):
            record.unlink(missing_ok=True)
            continue
        if process_alive(parent, info.get("parent_start")):
            continue
        if process_alive(server, info.get("server_start")):
            logger.warning("stopping temporary Prefect server (pid %d, port %s) left by process %d",
                           server, info.get("port"), parent)
            _stop(server)
            reaped.append(server)
        record.unlink(missing_ok=True)
    return reaped


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the temporary Prefect server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the temporary Prefect server did not answer {url} within {timeout:.0f} s; raise "
                       f"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS or start one (`make prefect-server`) "
                       f"and set PREFECT_API_URL")


def _launch(port: int) -> subprocess.Popen:
    import prefect
    from prefect.settings import get_current_settings

    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
           **get_current_settings().to_environment_variables(exclude_unset=True)}
    args = ["--app-dir", str(Path(prefect.__file__).parent.parent), "--factory",
            "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
            "--log-level", "error", "--lifespan", "on"]
    # own session: a Ctrl-C in the terminal reaches the script, which then stops the server itself
    return subprocess.Popen([sys.executable, "-c", _LAUNCH, str(os.getpid()), *args], env=env,
                            start_new_session=True)


@contextmanager
def temporary_server(startup_timeout: float | None = None) -> Iterator[str]:
    """Start a temporary Prefect server owned by this process and point Prefect at it; yields the API URL."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    reap_orphans()
    port = _free_port()
    proc = _launch(port)
    record = pid_dir() / f"{proc.pid}.json"
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"server_pid": proc.pid, "server_start": process_start_time(proc.pid),
                                      "parent_pid": os.getpid(), "parent_start": process_start_time(os.getpid()),
                                      "port": port}))
        api = f"http://127.0.0.1:{port}/api"
        logger.info("temporary Prefect server on %s (pid %d)", api, proc.pid)
        _wait_healthy(f"{api}/health", proc,
                      startup_timeout or float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()))
        forced = on_forced_exit("stop the temporary Prefect server",
                                lambda: (_stop(proc.pid, timeout=2.0), record.unlink(missing_ok=True)))
        with forced, temporary_settings(updates={PREFECT_API_URL: api}):
            try:
                yield api
            finally:
                _drain_prefect_logs()
    finally:
        _stop(proc.pid)
        record.unlink(missing_ok=True)


def _drain_prefect_logs(timeout: float = 5.0) -> None:
    """Send buffered run logs and events while the server is still up (bounded)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=timeout)
        except Exception as exc:  # a log that does not reach the UI must not change the pipeline's result
            logger.debug("could not drain %s: %s", worker.__name__, exc)


@contextmanager
def script_server(name: str) -> Iterator[None]:
    """What a flow script run from the command line needs around its flow call: SIGTERM unwinds the stack (so
    that the temporary server is stopped in ``finally``), bounded by ``flows.termination.sigterm_guard`` when
    the stack cannot unwind, and a temporary server owned by this process unless ``PREFECT_API_URL`` names one.
    ``name`` is what the kill message calls the script (e.g. 'antgo pipeline')."""
    def exit_on_signal(signum: int, frame: object) -> None:
        sys.stderr.write(f"{name} Killed: {signal.Signals(signum).name}\n")
        raise SystemExit(128 + signum)

    # Prefect's own handler re-raises SIGTERM after recording the crash; this one then unwinds the script
    previous = signal.signal(signal.SIGTERM, exit_on_signal)
    try:
        with sigterm_guard(name):
            if api_url_configured():
                yield
            else:
                with temporary_server():
                    yield
    finally:
        signal.signal(signal.SIGTERM, previous)
