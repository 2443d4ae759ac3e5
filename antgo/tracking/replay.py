"""Send what a tracking outage kept in a run folder to MLflow once the store is back.

``python -m antgo.tracking.replay RUN_DIR [--tracking-uri URI]`` reads ``RUN_DIR/mlflow_undelivered.jsonl``
(written by :mod:`antgo.tracking.transport` while the store was down) and sends each call again, in the
order it was made, to the runs it was meant for: metric values with their original step and timestamp,
params, tags, artifacts (files still in the run folder, JSON documents kept in the spool) and the final
status of runs that could not be ended. What was delivered leaves the spool; what failed stays for another
try; calls that cannot be repeated (creating a child run, registering a model) are listed and dropped, since
their run never existed. ``summary.json`` is brought up to date. The run folder's lock keeps a live pipeline
and a replay apart.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from antgo.fileio import atomic_write_text
from antgo.tracking.transport import SPOOL_NAME, undelivered_report

logger = logging.getLogger(__name__)

TOO_LARGE = "(too large to keep)"  # what the spool holds instead of a large JSON artifact


def replay_command(run_dir: str | Path) -> str:
    """The shell command that replays ``run_dir``'s spool (printed where an outage is reported)."""
    import shlex

    return f"python -m antgo.tracking.replay {shlex.quote(str(run_dir))}"


class ReplayError(RuntimeError):
    """The spool cannot be replayed into this store (unreachable, or it does not hold the runs)."""


@dataclass
class ReplayResult:
    delivered: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (entry, why it cannot be repeated)
    failed: list[dict[str, Any]] = field(default_factory=list)  # still in the spool, with the new reason


def read_spool(path: Path) -> list[dict[str, Any]]:
    """The spool's entries; a torn last line (the process was killed while appending) is skipped."""
    entries = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if number == len(lines):
                logger.warning("%s:%d: an incomplete last line is skipped (%s)", path, number, exc)
                continue
            raise ReplayError(f"{path}:{number}: not a JSON line ({exc}); remove or fix that line and replay "
                              f"again") from exc
    return entries


def _not_repeatable(entry: dict[str, Any], run_dir: Path) -> str | None:
    """Why ``entry`` cannot be sent again, or None."""
    kind = entry.get("kind")
    if entry.get("run_id") is None:
        return "no run to send it to"
    if kind == "run" and not entry.get("status"):
        return f"'{entry.get('call')}' is not repeated (it belonged to the live pipeline)"
    if kind == "artifact":
        if "data" in entry:
            return "the JSON document was too large to keep in the spool" if entry["data"] == TOO_LARGE else None
        if not _artifact_file(entry, run_dir).exists():
            return f"{entry.get('path')} no longer exists"
    if kind not in ("metrics", "params", "tags", "artifact", "run"):
        return f"unknown kind {kind!r}"
    return None


def _artifact_file(entry: dict[str, Any], run_dir: Path) -> Path:
    """The file as logged; a run folder moved since then is looked up under its new place."""
    path = Path(entry["path"])
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, run_dir / path]
    parts = path.parts
    if path.is_absolute() and run_dir.name in parts:  # .../<old place>/<run folder>/output/best.pth
        candidates.append(run_dir.joinpath(*parts[len(parts) - parts[::-1].index(run_dir.name):]))
    return next((c for c in candidates if c.exists()), candidates[0])


def _send(client: Any, entry: dict[str, Any], run_dir: Path) -> None:
    from mlflow.entities import Metric, Param, RunTag

    run_id, kind = entry["run_id"], entry["kind"]
    if kind == "metrics":
        now = int(time.time() * 1000)
        metrics = [Metric(str(m[0]), float(m[1]), int(m[3]) if len(m) > 3 else now, int(m[2]))
                   for m in entry["metrics"]]
        client.log_batch(run_id, metrics=metrics)
    elif kind == "params":
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in entry["params"].items()])
    elif kind == "tags":
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in entry["tags"].items()])
    elif kind == "artifact" and "data" in entry:
        client.log_dict(run_id, entry["data"], entry["path"])
    elif kind == "artifact":
        path = _artifact_file(entry, run_dir)
        if path.is_dir():
            client.log_artifacts(run_id, str(path), entry.get("artifact_path"))
        else:
            client.log_artifact(run_id, str(path), entry.get("artifact_path"))
    else:  # a run's final status
        if entry.get("error"):
            client.set_tag(run_id, "error", entry["error"])
        client.set_terminated(run_id, status=entry["status"])


def _check_store(client: Any, uri: str, entries: list[dict[str, Any]]) -> None:
    """Fail before sending anything when the store is down or does not hold the spool's runs."""
    from mlflow.exceptions import MlflowException

    from antgo.tracking.store import check_reachable

    reason = check_reachable(uri, timeout=5.0)
    if reason is not None:
        raise ReplayError(f"MLflow at {uri} is unreachable ({reason}); nothing was sent, the spool is kept. "
                          f"Replay again once the server is up, or pass --tracking-uri")
    missing = []
    for run_id in sorted({e["run_id"] for e in entries if e.get("run_id")}):
        try:
            client.get_run(run_id)
        except MlflowException:
            missing.append(run_id)
    if missing:
        raise ReplayError(f"MLflow at {uri} has no run {', '.join(missing)}: this is not the store the pipeline "
                          f"logged to; nothing was sent. Pass --tracking-uri with the store named in summary.json")


def replay(run_dir: str | Path, tracking_uri: str | None = None) -> ReplayResult:
    """Replay ``run_dir``'s spool into ``tracking_uri`` (default: the one in its ``summary.json``)."""
    from antgo.engine.runlock import RunLock
    from antgo.tracking.store import bound_http_retries, open_client, resolve_tracking_uri

    run_dir = Path(run_dir).resolve()
    spool = run_dir / SPOOL_NAME
    with RunLock(run_dir, purpose="tracking replay"):  # a live pipeline still appends to the spool
        if not spool.is_file():
            logger.info("%s: nothing to replay (no %s)", run_dir, SPOOL_NAME)
            return ReplayResult()
        summary = _read_summary(run_dir)
        uri = resolve_tracking_uri(tracking_uri or summary.get("tracking_uri"))
        entries = read_spool(spool)
        bound_http_retries()
        client = open_client(uri)
        verdicts = [(entry, _not_repeatable(entry, run_dir)) for entry in entries]
        _check_store(client, uri, [entry for entry, why in verdicts if why is None])
        result = ReplayResult()
        for entry, why in verdicts:
            if why is not None:
                result.dropped.append((entry, why))
                continue
            try:
                _send(client, entry, run_dir)
            except Exception as exc:  # this call only: the next may still go through
                result.failed.append({**entry, "reason": f"replay: {type(exc).__name__}: {str(exc)[:300]}"})
                continue
            result.delivered.append(entry)
        _rewrite(spool, run_dir, summary, result)
    return result


def _read_summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "summary.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except json.JSONDecodeError as exc:
        raise ReplayError(f"{path} is not valid JSON ({exc}); pass --tracking-uri to replay without it") from exc


def _rewrite(spool: Path, run_dir: Path, summary: dict[str, Any], result: ReplayResult) -> None:
    """Keep only what failed in the spool; ``summary.json`` lists what is still missing from MLflow."""
    if result.failed:
        atomic_write_text(spool, "".join(json.dumps(e, default=str) + "\n" for e in result.failed))
    else:
        spool.unlink()
    if not summary:
        return
    summary.pop("tracking_undelivered", None)
    if result.failed:
        summary["tracking_undelivered"] = undelivered_report(result.failed)
    summary["tracking_replay"] = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "delivered": len(result.delivered),
                                  "dropped": [f"{e.get('kind')} of run {e.get('run_id')}: {why}"
                                              for e, why in result.dropped],
                                  "still_undelivered": len(result.failed)}
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=str))


def log_result(result: ReplayResult, run_dir: Path) -> None:
    """One line per run and kind of call: delivered (INFO), dropped (WARNING), still undelivered (ERROR)."""
    for line in undelivered_report(result.delivered):
        logger.info("delivered: %s", line)
    for entry, why in result.dropped:
        logger.warning("not repeatable, dropped: %s (%s)", undelivered_report([entry])[0], why)
    for line in undelivered_report(result.failed):
        logger.error("still undelivered (kept in %s): %s", run_dir / SPOOL_NAME, line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m antgo.tracking.replay", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="the pipeline's run folder (it holds summary.json and the spool)")
    parser.add_argument("--tracking-uri", default=None,
                        help="the MLflow store (default: the tracking_uri in RUN_DIR/summary.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s - %(message)s")
    try:
        result = replay(args.run_dir, args.tracking_uri)
    except (RuntimeError, OSError) as exc:  # ReplayError, a locked run folder, an unreadable spool
        logger.error("%s", exc)
        return 1
    log_result(result, Path(args.run_dir))
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
