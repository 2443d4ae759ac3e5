"""Small file helpers shared by every layer (no torch, no heavy imports)."""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["atomic_write_text", "replace_when_written", "write_uninterrupted"]

T = TypeVar("T")


def write_uninterrupted(write: Callable[[], T]) -> T:
    """Run ``write`` to its end even if a signal handler raises meanwhile (Ctrl-C, Prefect's cancellation);
    the handler's exception is raised once the write has ended. Returns what ``write`` returns.

    Raised inside ``torch.save``, such an exception broke its zip writer: a ``RuntimeError`` hid the signal and
    the checkpoint was lost. Python runs signal handlers in the main thread only, so the write runs in a thread
    of its own while the main thread waits for it, and the handler raises in the wait. Handlers stay as they
    are: Prefect accepts a cancel only while its own SIGTERM handler is installed, and a cancel it refuses ends
    the flow run Crashed. A handler that ends the process (the default SIGTERM) still ends it at once; the
    file being written is then left as it was.
    """
    if threading.current_thread() is not threading.main_thread():
        return write()
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = write()
        except BaseException as exc:  # handed to the main thread
            outcome["error"] = exc
        finally:
            done.set()

    # waited for with an Event: Thread.join interrupted by a handler marks a live thread stopped (Python 3.11)
    worker = threading.Thread(target=run, name="antgo-write", daemon=True)
    interrupt: BaseException | None = None
    try:
        worker.start()
    except RuntimeError:  # no new thread (at interpreter shutdown on Python 3.12+, or none left): write here
        return write()
    except BaseException as exc:  # a handler raised while the thread started
        interrupt = exc
    while worker.ident is not None and not done.is_set():
        try:
            done.wait()
        except BaseException as exc:  # the first one is raised after the write; the write goes on
            interrupt = interrupt or exc
    if interrupt is not None:
        if "error" in outcome:
            raise interrupt from outcome["error"]
        raise interrupt
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def replace_when_written(path: str | os.PathLike, write: Callable[[str], T], suffix: str = "") -> T:
    """``write(tmp)`` into a temporary file beside ``path`` (``.<name>.tmp<pid><suffix>``), then ``os.replace`` it
    over ``path``: a reader never sees half a file, and a failed write leaves an earlier file as it was and no
    temporary file behind. Returns what ``write`` returns."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.tmp{os.getpid()}{suffix}")
    try:
        result = write(tmp)
        os.replace(tmp, path)
        return result
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> str:
    """Write ``text`` to ``path`` through :func:`replace_when_written`; a SIGTERM or Ctrl-C waits for the write
    to end (:func:`write_uninterrupted`). Returns the path."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    write_uninterrupted(lambda: replace_when_written(path, write))
    return os.fspath(path)
