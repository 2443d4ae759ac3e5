"""Console output for command-line use: log lines that never break a progress bar.

Torch-free on purpose: ``antgo predict --onnx`` and ``antgo list`` set up logging through this module.
Records go through ``tqdm.write`` while a bar is on screen, so a log line is printed above the bar instead
of through it (the bar is redrawn underneath).
"""
from __future__ import annotations

import logging
import sys

LOGGER_NAME = "antgo"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONSOLE_FORMAT = "%(asctime)s %(levelname).1s %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"


def _bars_active() -> bool:
    tqdm_module = sys.modules.get("tqdm")  # no bar can be on screen before tqdm was imported
    if tqdm_module is None:
        return False
    return bool(getattr(tqdm_module.tqdm, "_instances", None))


class ConsoleHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time (tests replace it), through tqdm when bars run."""

    _antgo_console = True

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass

    def emit(self, record: logging.LogRecord) -> None:
        if not _bars_active():
            super().emit(record)
            return
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001  (logging must never raise)
            self.handleError(record)


def setup_console_logging(level: int = logging.INFO) -> None:
    """INFO to stderr for command-line use (idempotent; keeps handlers others installed)."""
    root = logging.getLogger()
    if not any(getattr(h, "_antgo_console", False) for h in root.handlers):
        handler = ConsoleHandler()
        handler.setFormatter(logging.Formatter(CONSOLE_FORMAT, DATEFMT))
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger(LOGGER_NAME).setLevel(level)


_SEEN: set[tuple[str, str]] = set()


def log_once(log: logging.Logger, level: int, msg: str, *args: object) -> None:
    """Log a message at ``level`` the first time it is seen in this process and at DEBUG afterwards.

    For facts that several stages rediscover (a data set's size when the train, test and parity stages each
    build it): the console says it once.
    """
    text = msg % args if args else msg
    key = (log.name, text)
    if key in _SEEN:
        log.debug("%s", text)
        return
    _SEEN.add(key)
    log.log(level, "%s", text)
