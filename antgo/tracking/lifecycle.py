"""Who owns an MLflow run, and closing the runs whose owner died without closing them (``kill -9``, OOM).

Every pipeline's parent run carries ``antgo.host``, ``antgo.pid`` and ``antgo.pid_start`` (the process start
time, so a reused pid is not mistaken for the owner). The next pipeline start in the same experiment on the same
host marks RUNNING runs of dead owners, and their RUNNING child runs, KILLED with the reason in ``error``.
"""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux ``/proc``), None elsewhere or when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22 of proc(5); the name may contain spaces


def owner_tags() -> dict[str, str]:
    """Tags naming this process as the owner of a run."""
    started = process_start_time(os.getpid())
    return {"antgo.host": socket.gethostname(), "antgo.pid": str(os.getpid()),
            "antgo.pid_start": "" if started is None else str(started)}


def process_alive(pid: int, started: int | str | None = None) -> bool:
    """True while process ``pid`` runs (and, given its recorded start time, is still that same process)."""
    now = process_start_time(pid)
    if now is not None:
        return started in (None, "") or str(now) == str(started)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not Path("/proc").is_dir()  # /proc exists but has no entry: the process is gone


def owner_alive(tags: dict[str, str]) -> bool:
    """True unless the run's owner is known to have ended (another host counts as alive: it cannot be checked)."""
    if tags.get("antgo.host") != socket.gethostname() or not tags.get("antgo.pid", "").isdigit():
        return True
    pid = int(tags["antgo.pid"])
    return pid == os.getpid() or process_alive(pid, tags.get("antgo.pid_start"))


def close_orphaned_runs(client: Any, experiment_id: str) -> list[Any]:
    """Mark RUNNING pipeline runs of ``experiment_id`` whose owner ended (and their running children) KILLED.

    Returns the closed parent runs (their ``prefect.flow_run_id`` tag names the Prefect run to mark too).
    """
    from antgo.tracking.runs import error_text

    parents = client.search_runs([experiment_id], max_results=200,
                                 filter_string="tags.`antgo.pipeline` = 'true' and attributes.status = 'RUNNING'")
    closed = []
    for parent in parents:
        tags = parent.data.tags
        if owner_alive(tags):
            continue
        reason = (f"process {tags.get('antgo.pid')} on {tags.get('antgo.host')} ended without closing this run "
                  f"(killed?); closed by the pipeline started by process {os.getpid()}")
        children = client.search_runs([experiment_id], filter_string=(
            f"tags.mlflow.parentRunId = '{parent.info.run_id}' and attributes.status = 'RUNNING'"))
        for run in [*children, parent]:
            client.set_tag(run.info.run_id, "error", error_text(reason))
            client.set_terminated(run.info.run_id, status="KILLED")
        logger.warning("MLflow run %s (%s) was left RUNNING by process %s: marked KILLED",
                       parent.info.run_id, parent.info.run_name, tags.get("antgo.pid"))
        closed.append(parent)
    return closed
