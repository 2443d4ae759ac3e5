"""Whether and how a pipeline reaches MLflow: the tracking mode, a fail-fast check, the parent run.

``required`` (default): an unreachable store fails in seconds, before a run folder exists, naming the URI and
the fix. ``optional``: warn and run without MLflow (the run folder keeps everything). ``off``: never contact it.
Chosen by ``--tracking`` / the flow parameter, else ``$ANTGO_TRACKING``, else ``mlflow.tracking`` in the config.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from antgo.tracking.runs import PipelineTracker, error_text
from antgo.tracking.store import (TrackingUnavailableError, check_reachable, interrupted_migration,
                                  unreachable_message)
from antgo.tracking.transport import SPOOL_NAME

logger = logging.getLogger("antgo.flows")

TRACKING_MODES = ("required", "optional", "off")


def tracking_mode(explicit: str | None, config_path: Path, cfg_options: list[str] | None = None) -> str:
    """``explicit`` (flag / flow parameter), else ``$ANTGO_TRACKING``, else ``mlflow.tracking``, else required."""
    mode = explicit or os.environ.get("ANTGO_TRACKING") or _config_tracking(config_path, cfg_options) or "required"
    if mode not in TRACKING_MODES:
        raise ValueError(f"tracking={mode!r} is not one of {', '.join(TRACKING_MODES)} "
                         f"(--tracking, ANTGO_TRACKING or mlflow.tracking in {config_path.name})")
    return mode


def _config_tracking(config_path: Path, cfg_options: list[str] | None) -> str | None:
    from antgo.config import Config

    try:
        cfg = Config.fromfile(str(config_path), cfg_options=cfg_options or None)
    except Exception:  # a broken config is reported by the parse_config stage, with its own run
        return None
    return ((cfg.get("mlflow") or {}).get("tracking")) or None


def check_tracking(mode: str, uri: str) -> bool:
    """True when the store answers; raises (required) or warns (optional) when it does not, in seconds."""
    if mode == "off":
        return False
    reason = check_reachable(uri)
    if reason is None:
        message = interrupted_migration(uri)
        if message is None:
            return True
    else:
        message = unreachable_message(uri, reason)
    if mode == "required":
        raise TrackingUnavailableError(message)
    logger.warning("%s Tracking is optional: this run goes on without MLflow.", message)
    return False


def open_tracker(mode: str, reachable: bool, uri: str, experiment: str, run_dir: Path,
                  tags: dict[str, Any]) -> PipelineTracker:
    """The pipeline's parent run, or a disabled tracker (tracking off, or optional and unavailable)."""
    if not reachable:
        return PipelineTracker.disabled(uri)
    try:
        tracker = PipelineTracker.start(experiment, run_name=run_dir.name, tracking_uri=uri, tags=tags,
                                        spool=run_dir / SPOOL_NAME)
    except Exception as exc:
        if mode == "required":
            raise
        logger.warning("MLflow at %s failed (%s); tracking is optional: this run goes on without it", uri,
                       error_text(exc))
        return PipelineTracker.disabled(uri)
    for parent in tracker.closed_orphans:
        _crash_prefect_run(parent.data.tags.get("prefect.flow_run_id"), "its process ended without closing it")
    return tracker


def _crash_prefect_run(flow_run_id: str | None, reason: str) -> None:
    """Mark the Prefect run of a killed pipeline Crashed (it stays Running otherwise); best effort."""
    if not flow_run_id:
        return
    try:
        from flows.server import crash_flow_run

        crash_flow_run(flow_run_id, reason)
    except Exception as exc:
        logger.debug("could not mark Prefect flow run %s crashed: %s", flow_run_id, exc)


def replay_earlier_outage(run_dir: Path, uri: str, reachable: bool) -> None:
    """A resumed folder may hold what an earlier outage kept: send it before this pipeline opens its runs, so
    that runs which ended during the outage get their status before the still RUNNING ones are closed as
    KILLED. A failure only warns: the spool stays for a replay by hand."""
    if not reachable or not (run_dir / SPOOL_NAME).is_file():
        return
    from antgo.tracking.replay import log_result, replay, replay_command

    try:
        result = replay(run_dir, uri)
    except Exception as exc:  # the resumed pipeline goes on either way
        logger.warning("%s (%s --tracking-uri URI sends it later)", exc, replay_command(run_dir))
        return
    logger.info("replayed what an earlier outage kept in %s:", run_dir / SPOOL_NAME)
    log_result(result, run_dir)
