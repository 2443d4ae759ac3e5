"""write_uninterrupted: a write ends before a signal handler's exception is raised, and handlers stay as they are."""
from __future__ import annotations

import os
import signal
import threading

import pytest

from antgo.fileio import atomic_write_text, write_uninterrupted


class _Stop(Exception):
    pass


def _raise_stop(signum, frame):
    raise _Stop(signum)


@pytest.fixture()
def raising_sigterm():
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    yield
    signal.signal(signal.SIGTERM, previous)


def test_a_handler_that_raises_waits_for_the_write_and_stays_installed(raising_sigterm, tmp_path):
    steps = []

    def write():
        steps.append(signal.getsignal(signal.SIGTERM) is _raise_stop)  # not swapped for the write
        os.kill(os.getpid(), signal.SIGTERM)
        steps.append("written")
        return "value"

    with pytest.raises(_Stop):
        write_uninterrupted(write)
    assert steps == [True, "written"]
    assert signal.getsignal(signal.SIGTERM) is _raise_stop


def test_the_value_and_errors_of_the_write_come_back():
    assert write_uninterrupted(lambda: 7) == 7
    with pytest.raises(ZeroDivisionError):
        write_uninterrupted(lambda: 1 / 0)


def test_a_signal_during_a_failing_write_is_raised_with_the_write_error_as_cause(raising_sigterm):
    def write():
        os.kill(os.getpid(), signal.SIGTERM)
        raise OSError("disk full")

    with pytest.raises(_Stop) as raised:
        write_uninterrupted(write)
    assert isinstance(raised.value.__cause__, OSError)


def test_outside_the_main_thread_the_write_runs_in_place():
    seen = []
    worker = threading.Thread(target=lambda: seen.append(write_uninterrupted(threading.current_thread)))
    worker.start()
    worker.join()
    assert seen == [worker]


def test_atomic_write_text_under_a_signal_leaves_the_whole_file(raising_sigterm, tmp_path, monkeypatch):
    real_replace = os.replace

    def replace_after_a_signal(src, dst):
        os.kill(os.getpid(), signal.SIGTERM)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_after_a_signal)
    with pytest.raises(_Stop):
        atomic_write_text(tmp_path / "a.json", "{}")
    monkeypatch.undo()
    assert (tmp_path / "a.json").read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_without_a_new_thread_the_write_runs_in_place(monkeypatch):
    """Python 3.12+ refuses new threads at interpreter shutdown (an atexit handler writing its summary)."""
    def refuse(self):
        raise RuntimeError("can't create new thread at interpreter shutdown")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    assert write_uninterrupted(lambda: threading.current_thread()) is threading.main_thread()
