"""A flow script stopped by SIGTERM ends within a bounded time, even when its main thread cannot unwind.

SIGTERM normally unwinds the script: Prefect records the crash, the stages mark their MLflow runs KILLED and
``finally`` stops the temporary Prefect server. That needs the main thread to run Python code again, and a main
thread blocked inside native code (a wedged OpenMP barrier, a C call that never returns) never does. The guard
does not depend on it: ``signal.set_wakeup_fd`` makes the interpreter's C-level handler write the signal number
to a socket from whichever thread the kernel picked, and a watcher thread reads it. After ``grace_s`` seconds
(``ANTGO_TERM_GRACE_S``, default 10) without the script having exited, the watcher runs the registered emergency
actions, each bounded (close this pipeline's MLflow runs as KILLED, set its Prefect flow run Crashed, stop the
temporary server), and ends the process with status 143 (128 + SIGTERM).
"""
from __future__ import annotations

import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from antgo.config.env import env_seconds

logger = logging.getLogger("antgo.flows")

DEFAULT_GRACE_S = 10.0
ACTION_TIMEOUT_S = 5.0  # each emergency action; they run one after the other

_actions: dict[int, tuple[str, Callable[[], object]]] = {}
_actions_lock = threading.Lock()
_next_token = iter(range(1, 1 << 62))


def grace_seconds() -> float:
    """``ANTGO_TERM_GRACE_S`` (seconds the normal cleanup gets after SIGTERM), default 10."""
    return env_seconds("ANTGO_TERM_GRACE_S", DEFAULT_GRACE_S)


@contextmanager
def on_forced_exit(what: str, action: Callable[[], object]) -> Iterator[None]:
    """Run ``action`` if the guard has to end the process while this block is open (``what`` names it)."""
    with _actions_lock:
        token = next(_next_token)
        _actions[token] = (what, action)
    try:
        yield
    finally:
        with _actions_lock:
            _actions.pop(token, None)


def _run_bounded(what: str, action: Callable[[], object], timeout: float) -> None:
    def run() -> None:
        try:
            action()
        except Exception as exc:  # the exit goes on: report what could not be done
            sys.stderr.write(f"  could not {what}: {type(exc).__name__}: {exc}\n")

    worker = threading.Thread(target=run, name=f"antgo-forced-exit: {what}", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        sys.stderr.write(f"  gave up on: {what} (more than {timeout:.0f} s)\n")


def force_exit(name: str, signum: int, reason: str) -> None:
    """The emergency actions (latest registered first, like ``finally`` blocks), then ``os._exit(128+signum)``."""
    sys.stderr.write(f"{name} Killed: {signal.Signals(signum).name}; {reason}\n")
    with _actions_lock:
        actions = list(_actions.values())[::-1]
    for what, action in actions:
        _run_bounded(what, action, ACTION_TIMEOUT_S)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or broken stream must not keep the process alive
            pass
    os._exit(128 + signum)


class _Watcher(threading.Thread):
    """Reads the signal numbers the interpreter writes to the wakeup socket; runs the grace clock."""

    def __init__(self, name: str, read_end: socket.socket, grace_s: float) -> None:
        super().__init__(name="antgo-sigterm-guard", daemon=True)
        self.script = name
        self.read_end = read_end
        self.grace_s = grace_s
        self.stopping = threading.Event()

    def run(self) -> None:
        deadline = None  # set by the first SIGTERM
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                ready, _, _ = select.select([self.read_end], [], [], timeout)
                data = self.read_end.recv(64) if ready else None
            except OSError:
                return  # the guard was removed and its socket closed
            if self.stopping.is_set() or data == b"":
                return
            if data is None:  # the grace period passed and the script is still here
                force_exit(self.script, signal.SIGTERM,
                           f"the cleanup did not finish within {self.grace_s:g} s: forced exit")
            # later SIGTERMs do not shorten the grace period: Prefect re-sends SIGTERM to its own process once
            # it has recorded the crash, and cannot be told apart from a second one sent by a user
            if deadline is None and bytes([signal.SIGTERM]) in data:
                deadline = time.monotonic() + self.grace_s
                sys.stderr.write(f"{self.script}: SIGTERM received, cleaning up (at most {self.grace_s:g} s)\n")
                sys.stderr.flush()


@contextmanager
def sigterm_guard(name: str, grace_s: float | None = None) -> Iterator[None]:
    """Watch for SIGTERM while the block runs (main thread only; elsewhere the block runs unguarded)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    grace = grace_seconds() if grace_s is None else grace_s
    read_end, write_end = socket.socketpair()
    write_end.setblocking(False)  # the C handler must never block on a full socket
    previous = signal.set_wakeup_fd(write_end.fileno(), warn_on_full_buffer=False)
    watcher = _Watcher(name, read_end, grace)
    watcher.start()
    try:
        yield
    finally:
        watcher.stopping.set()
        signal.set_wakeup_fd(previous)
        write_end.close()  # wakes the watcher (recv returns b"" or raises), which then returns
        watcher.join(timeout=2.0)
        read_end.close()
