"""Console logging: a log line printed while a progress bar is on screen does not break the bar."""
from __future__ import annotations

import io
import logging
import sys

from tqdm import tqdm

from antgo.console import ConsoleHandler, log_once


def test_log_lines_go_above_an_active_progress_bar(monkeypatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    handler = ConsoleHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("antgo.test_console")
    log.addHandler(handler)
    log.propagate = False
    try:
        bar = tqdm(total=10, file=stream, ncols=60, mininterval=0)
        bar.update(3)
        log.warning("a line while the bar runs")
        bar.update(1)
        bar.close()
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    line_start = text.index("a line while the bar runs")
    # tqdm.write clears the bar first, so the message starts its own line instead of being glued to the bar
    assert text[line_start - 1] in "\r\n" and "3/10" in text[:line_start] and "4/10" in text[line_start:]


def test_log_once_says_a_fact_once(caplog) -> None:
    log = logging.getLogger("antgo.test_console.once")
    with caplog.at_level(logging.DEBUG, logger="antgo.test_console.once"):
        for _ in range(3):
            log_once(log, logging.INFO, "data.val: %d samples", 100)
    levels = [r.levelno for r in caplog.records]
    assert levels == [logging.INFO, logging.DEBUG, logging.DEBUG]
