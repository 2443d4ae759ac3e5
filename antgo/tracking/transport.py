"""How tracking calls reach MLflow without ever stalling training.

Logging calls (metrics, params, tags, artifacts) go into a bounded queue that one background thread sends;
the caller never waits on the network. Run lifecycle calls (create, terminate) wait for the queue to drain
and then run in the caller's thread, bounded. When a call fails and the server does not answer ``/health``,
the transport is *down* for ``cooldown_s``: calls are not attempted but recorded as undelivered (appended to a
JSON-lines spool file in the run folder as they happen, so a killed process keeps them too); after the
cool-down the next call tries again. :meth:`Transport.close` drains with a deadline and returns the report
that the pipeline prints as a warning.
"""
from __future__ import annotations

import atexit
import json
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from antgo.tracking.store import bound_http_retries, check_reachable, is_remote

logger = logging.getLogger(__name__)

SPOOL_NAME = "mlflow_undelivered.jsonl"


@dataclass
class Op:
    """One tracking call: what it is (kind, run, JSON-able payload, for the report) and how to send it."""

    kind: str  # metrics | params | tags | artifact | run
    run_id: str | None
    payload: dict[str, Any]
    send: Callable[[], Any] = field(repr=False)


class Transport:
    """Bounded background delivery of tracking calls to one MLflow store (see the module docstring)."""

    def __init__(self, tracking_uri: str, spool: str | Path | None = None, maxsize: int = 10000,
                 cooldown_s: float = 15.0, flush_timeout_s: float = 60.0) -> None:
        bound_http_retries()
        self.tracking_uri = tracking_uri
        self.spool = Path(spool) if spool else None
        self.cooldown_s = cooldown_s
        self.flush_timeout_s = flush_timeout_s
        self.undelivered: list[dict[str, Any]] = []
        self.delivered = 0
        self._queue: queue.Queue[Op | None] = queue.Queue(maxsize=maxsize)
        self._down_until = 0.0
        self._down_reason = ""
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name="antgo-mlflow-transport", daemon=True)
        self._worker.start()

    # --- state --------------------------------------------------------------------------------------------
    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    def _mark_down(self, reason: str) -> None:
        if not self.down:
            logger.warning("MLflow tracking store %s unreachable (%s): training goes on; tracking calls are "
                           "kept in the run folder for %.0f s, then retried", self.tracking_uri, reason,
                           self.cooldown_s)
        self._down_until = time.monotonic() + self.cooldown_s
        self._down_reason = reason

    def _outage(self, exc: BaseException) -> str | None:
        """Why the store is down after ``exc``, or None when it answers (the call itself was wrong)."""
        if not is_remote(self.tracking_uri):
            return None
        return check_reachable(self.tracking_uri, timeout=2.0)

    def _record(self, op: Op, reason: str) -> None:
        entry = {"kind": op.kind, "run_id": op.run_id, "reason": reason, **op.payload}
        with self._lock:
            self.undelivered.append(entry)
            if self.spool is not None:
                try:
                    self.spool.parent.mkdir(parents=True, exist_ok=True)
                    with self.spool.open("a") as f:
                        f.write(json.dumps(entry, default=str) + "\n")
                except OSError as exc:
                    logger.debug("could not append to %s: %s", self.spool, exc)

    # --- sending ------------------------------------------------------------------------------------------
    def _deliver(self, op: Op, raise_errors: bool = False) -> Any:
        """Send ``op`` unless the store is down; failures are recorded (an outage also marks it down).

        ``raise_errors``: a failure while the store answers is the call's own error and propagates.
        """
        if self.down:
            self._record(op, f"store unreachable: {self._down_reason}")
            return None
        try:
            result = op.send()
        except Exception as exc:
            reason = self._outage(exc)
            if reason is not None:
                self._mark_down(reason)
            elif raise_errors:
                raise
            else:
                logger.warning("MLflow %s call for run %s failed: %s", op.kind, op.run_id, exc)
            self._record(op, f"{type(exc).__name__}: {str(exc)[:300]}")
            return None
        self.delivered += 1
        return result

    def _run(self) -> None:
        while True:
            op = self._queue.get()
            try:
                if op is None:
                    return
                self._deliver(op)
            finally:
                self._queue.task_done()

    def submit(self, op: Op) -> None:
        """Queue ``op`` without waiting; a full queue records it as undelivered instead."""
        if not self._worker.is_alive():
            self._record(op, "transport closed")
            return
        try:
            self._queue.put_nowait(op)
        except queue.Full:
            self._record(op, f"queue full ({self._queue.maxsize} calls waiting)")

    def flush(self, timeout: float | None = None) -> bool:
        """Wait (at most ``timeout`` s) until every queued call was sent or recorded; True when drained."""
        deadline = time.monotonic() + (self.flush_timeout_s if timeout is None else timeout)
        done = self._queue.all_tasks_done  # the condition Queue.join() waits on; join() itself has no timeout
        with done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._worker.is_alive():
                    return False
                done.wait(min(remaining, 1.0))
        return True

    def call(self, op: Op, flush_timeout: float | None = None) -> Any:
        """Send ``op`` now in this thread, after the queue drained; None (and recorded) when the store is down.

        Errors of the call itself (the store answers) propagate, as they would without the transport.
        """
        if not self.flush(flush_timeout):
            self._mark_down("earlier calls still waiting for the server")
        return self._deliver(op, raise_errors=True)

    def close(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Drain (bounded), stop the thread, record what is still queued; returns everything undelivered."""
        self.flush(timeout)
        while True:
            try:
                op = self._queue.get_nowait()
            except queue.Empty:
                break
            if op is not None:
                self._record(op, "not sent before the pipeline ended")
            self._queue.task_done()
        if self._worker.is_alive():
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass
        return list(self.undelivered)


# One transport per pipeline in this process: the stage tasks build their own trackers from the pipeline's
# context and share its queue, its outage state and its record of what was not delivered.
_TRANSPORTS: dict[str, Transport] = {}
_TRANSPORTS_LOCK = threading.Lock()


def transport_for(key: str, tracking_uri: str, spool: str | Path | None = None) -> Transport:
    """The transport registered under ``key`` (the pipeline's parent run id), created on first use."""
    with _TRANSPORTS_LOCK:
        transport = _TRANSPORTS.get(key)
        if transport is None:
            transport = _TRANSPORTS[key] = Transport(tracking_uri, spool)
        return transport


def release_transport(key: str) -> Transport | None:
    """Forget the transport of ``key`` (the caller closes it)."""
    with _TRANSPORTS_LOCK:
        return _TRANSPORTS.pop(key, None)


@atexit.register
def _drain_at_exit(timeout: float = 10.0) -> None:
    """A process that logged without closing its tracker (a launched rank-0 trainer) still sends its queue."""
    with _TRANSPORTS_LOCK:
        transports = list(_TRANSPORTS.values())
    for transport in transports:
        transport.flush(timeout)


def undelivered_report(entries: list[dict[str, Any]]) -> list[str]:
    """One line per (run, kind): ``run R: 120 metric values (loss, lr; steps 3-40)``, ``2 artifacts (...)``."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        groups[(str(entry.get("run_id")), entry["kind"])].append(entry)
    lines = []
    for (run_id, kind), items in groups.items():
        if kind == "metrics":
            values = [m for e in items for m in e.get("metrics", [])]
            keys = sorted({m[0] for m in values})
            steps = [m[2] for m in values]
            span = f"; steps {min(steps)}-{max(steps)}" if steps else ""
            what = f"{len(values)} metric values ({', '.join(keys[:8])}{', ...' if len(keys) > 8 else ''}{span})"
        elif kind in ("params", "tags"):
            keys = [k for e in items for k in e.get(kind, {})]
            what = f"{len(keys)} {kind} ({', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''})"
        elif kind == "artifact":
            what = f"{len(items)} artifacts ({', '.join(str(e.get('path')) for e in items[:6])})"
        else:
            what = f"{len(items)} call{'s' if len(items) > 1 else ''} ({'; '.join(str(e.get('call')) for e in items[:6])})"
        lines.append(f"run {run_id}: {what}")
    return lines
