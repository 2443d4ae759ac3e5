"""Small file helpers shared by every layer (no torch, no heavy imports)."""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["atomic_write_text", "signals_deferred"]

DEFERRED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGTERM and SIGINT that arrive inside the block reach their handlers when it ends (main thread only).

    A Python handler that raises (Ctrl-C, Prefect's cancellation) would otherwise raise in the middle of a file
    write; inside ``torch.save`` that turns into a ``RuntimeError`` from its zip writer, which hides the signal
    and loses the checkpoint. Handlers installed outside Python (``None``) are left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    for signum in DEFERRED_SIGNALS:
        if signal.getsignal(signum) is not None:
            previous[signum] = signal.signal(signum, lambda num, frame: received.append(num))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            if previous[signum] is not signal.SIG_IGN:
                signal.raise_signal(signum)  # now handled as it would have been: raise, or end the process


def atomic_write_text(path: str | os.PathLike, text: str) -> str:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``: a reader (or
    a process killed mid-write) never leaves half a file, and a SIGTERM or Ctrl-C waits for the write to end
    (:func:`signals_deferred`). Returns the path."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with signals_deferred():
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
