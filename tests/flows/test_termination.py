"""The SIGTERM guard of the flow scripts: a main thread blocked in native code still ends the process within
the grace period, with the registered emergency actions run; a normal unwinding runs none of them, also when
the script sends itself SIGTERM again while unwinding."""
from __future__ import annotations

import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# A script like a flow script: a Python SIGTERM handler that unwinds, the guard, one emergency action.
SCRIPT = '''
import ctypes, os, pathlib, signal, sys, time
sys.path.insert(0, {repo!r})
from flows.termination import on_forced_exit, sigterm_guard

marker = pathlib.Path(sys.argv[1])

def unwind(signum, frame):
    if sys.argv[2] == "resend":  # like Prefect: record, re-send the signal to itself, then unwind slowly
        signal.signal(signal.SIGTERM, lambda *_: None)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1.5)
        sys.stderr.write("cleanup done\\n")
    raise SystemExit(128 + signum)

signal.signal(signal.SIGTERM, unwind)
with sigterm_guard("demo script", grace_s=float(sys.argv[3])):
    with on_forced_exit("write the marker", lambda: marker.write_text("forced")):
        if sys.argv[2] == "native":  # a normal mutex locked twice by its thread: no signal ends that call
            mutex = ctypes.create_string_buffer(64)
            libc = ctypes.CDLL(None)
            libc.pthread_mutex_lock(mutex)
            print("ready", flush=True)
            libc.pthread_mutex_lock(mutex)
        else:
            print("ready", flush=True)
            time.sleep(120)
'''


@pytest.fixture(autouse=True)
def _no_survivors():
    """A failed test must not leave its blocked script behind."""
    yield
    for proc in _STARTED:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _STARTED.clear()


_STARTED: list[subprocess.Popen] = []


def _start(tmp_path: Path, mode: str, grace_s: float) -> tuple[subprocess.Popen, Path]:
    script = tmp_path / "guarded.py"
    script.write_text(SCRIPT.format(repo=str(REPO)))
    marker = tmp_path / "marker.txt"
    proc = subprocess.Popen([sys.executable, str(script), str(marker), mode, str(grace_s)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _STARTED.append(proc)
    assert _line(proc.stdout, 60).strip() == "ready", proc.stderr.read()
    return proc, marker


def _line(stream, timeout: float) -> str:
    """The next line of a pipe, or "" when none comes within ``timeout`` s."""
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else ""


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"still running {timeout:.0f} s after SIGTERM")
    return proc.returncode, err


def _wait_until_blocked(pid: int, timeout: float = 30) -> None:
    """Until the main thread sleeps in the kernel on the mutex: a SIGTERM sent just before that would still
    reach the Python handler (Linux: /proc's wchan; elsewhere the test goes on at once)."""
    wchan = Path(f"/proc/{pid}/task/{pid}/wchan")
    if not wchan.exists():
        return
    deadline = time.monotonic() + timeout
    while "futex" not in wchan.read_text():
        assert time.monotonic() < deadline, f"the script's main thread never blocked ({wchan.read_text()!r})"
        time.sleep(0.01)


def test_a_main_thread_stuck_in_native_code_is_ended_after_the_grace_period(tmp_path):
    proc, marker = _start(tmp_path, "native", grace_s=1.0)
    _wait_until_blocked(proc.pid)
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    returncode, err = _finish(proc, timeout=30)
    elapsed = time.monotonic() - start
    assert returncode == 143, err
    assert 1.0 <= elapsed < 10, f"ended after {elapsed:.1f} s (grace 1 s)"
    assert marker.read_text() == "forced"
    assert "demo script Killed: SIGTERM; the cleanup did not finish within 1 s: forced exit" in err


def test_a_script_that_unwinds_runs_no_emergency_action(tmp_path):
    proc, marker = _start(tmp_path, "sleep", grace_s=30.0)
    proc.send_signal(signal.SIGTERM)
    returncode, err = _finish(proc, timeout=20)
    assert returncode == 143, err
    assert not marker.exists()
    assert "forced exit" not in err


def test_a_sigterm_the_script_sends_itself_while_unwinding_does_not_cut_the_cleanup_short(tmp_path):
    """Prefect re-sends SIGTERM to its own process once it has recorded the crash: that is no reason to give
    up on a cleanup that is still within its grace period."""
    proc, marker = _start(tmp_path, "resend", grace_s=30.0)
    proc.send_signal(signal.SIGTERM)
    returncode, err = _finish(proc, timeout=60)
    assert returncode == 143, err
    assert not marker.exists(), err
    assert "forced exit" not in err
    assert "cleanup done" in err


def test_the_grace_period_comes_from_the_environment(monkeypatch):
    from flows.termination import DEFAULT_GRACE_S, grace_seconds

    monkeypatch.delenv("ANTGO_TERM_GRACE_S", raising=False)
    assert grace_seconds() == DEFAULT_GRACE_S
    monkeypatch.setenv("ANTGO_TERM_GRACE_S", "2.5")
    assert grace_seconds() == 2.5
    monkeypatch.setenv("ANTGO_TERM_GRACE_S", "soon")
    with pytest.raises(ValueError, match="ANTGO_TERM_GRACE_S='soon' is not a number of seconds"):
        grace_seconds()


def test_the_forced_exit_marks_the_flow_run_crashed_from_another_thread(prefect_api):
    """With a shared server the flow run would stay Running: the guard's worker thread (which does not see this
    thread's Prefect settings) sets it Crashed on the server it is given (real server)."""
    import threading

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    from flows.server import crash_flow_run

    @flow(name="guarded")
    def guarded() -> None:
        pass

    with get_client(sync_client=True) as client:
        run = client.create_flow_run(guarded)
        client.set_flow_run_state(run.id, Running())
        errors: list[BaseException] = []

        def crash() -> None:
            try:
                crash_flow_run(str(run.id), "SIGTERM: ended after the grace period", prefect_api)
            except BaseException as exc:  # reported below: a thread's exception would be lost
                errors.append(exc)

        worker = threading.Thread(target=crash)
        worker.start()
        worker.join(30)
        assert not errors, errors
        state = client.read_flow_run(run.id).state
    assert state.type.value == "CRASHED" and state.message == "SIGTERM: ended after the grace period"
