"""Multi-process training from the train stage: ``torchrun`` as a subprocess, its output streamed into the
Prefect run's log, rank 0 alone logging to the stage's MLflow run, the failing rank's error as the stage's.

Options (flow parameter ``nproc_per_node`` / ``launch``, or the config's ``dist_params``)::

    nproc_per_node=2                                     # one machine, two processes (GPUs, or gloo on CPU)
    nnodes=2, node_rank=0, rdzv_endpoint="host:29400"   # several machines (run the flow on each node)

Each rank runs ``python -m flows.launch JOB.json``: it builds the Trainer like the single-process path
(``flows.tasks.run_trainer``); rank 0 writes the training result, every failing rank writes its error.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

logger = logging.getLogger("antgo.flows")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: torchrun options a launch may set (underscored here, dashed on the command line).
LAUNCH_OPTIONS = ("nproc_per_node", "nnodes", "node_rank", "rdzv_endpoint", "rdzv_backend", "rdzv_id",
                  "master_addr", "master_port", "max_restarts", "monitor_interval")
RESULT_FILE = "result.json"


class RankFailedError(RuntimeError):
    """A rank of a torchrun training failed; the message is that rank's error."""


def launch_options(cfg_dist: dict[str, Any] | None, launch: dict[str, Any] | None,
                   nproc_per_node: int | None = None) -> dict[str, Any]:
    """Merge the config's ``dist_params``, the flow's ``launch`` and ``nproc_per_node`` (later ones win);
    unknown keys are an error naming the known ones (``backend`` is the Trainer's, not torchrun's)."""
    merged = {k: v for k, v in dict(cfg_dist or {}).items() if k != "backend"}
    merged.update(launch or {})
    if nproc_per_node is not None:
        merged["nproc_per_node"] = nproc_per_node
    unknown = sorted(set(merged) - set(LAUNCH_OPTIONS))
    if unknown:
        raise ValueError(f"launch options {unknown} unknown; known: {', '.join(LAUNCH_OPTIONS)}")
    return {k: v for k, v in merged.items() if v is not None}


def needs_torchrun(launch: dict[str, Any] | None) -> bool:
    """More than one process (on this node, or nodes) asks for torchrun."""
    launch = launch or {}
    return int(launch.get("nproc_per_node") or 1) > 1 or int(launch.get("nnodes") or 1) > 1


def torchrun_command(launch: dict[str, Any], job_file: Path) -> list[str]:
    """``python -m torch.distributed.run [options] -m flows.launch JOB``; ``--standalone`` on one node."""
    cmd = [sys.executable, "-m", "torch.distributed.run"]
    if int(launch.get("nnodes") or 1) == 1 and not launch.get("rdzv_endpoint"):
        cmd.append("--standalone")
    for key in LAUNCH_OPTIONS:
        if key in launch:
            cmd.append(f"--{key.replace('_', '-')}={launch[key]}")
    return cmd + ["-m", "flows.launch", str(job_file)]


def _stream_logger() -> Any:
    try:
        from prefect import get_run_logger

        return get_run_logger()
    except Exception:  # outside a Prefect run (direct calls, tests)
        return logger


def train_with_torchrun(config_path: str, run_dir: str, tracking: dict[str, Any], train_run_id: str | None,
                        launch: dict[str, Any], **train_kwargs: Any) -> dict[str, Any]:
    """Run ``flows.tasks.run_trainer`` on every rank under torchrun; return rank 0's training result.

    The ranks' output goes line by line to the Prefect run log (and ``<run_dir>/ddp/torchrun.log``). A failed
    rank raises ``RankFailedError`` with the error of the rank that failed first.
    """
    job_dir = Path(run_dir) / "ddp"
    job_dir.mkdir(parents=True, exist_ok=True)
    for old in job_dir.glob("rank*.error.json"):
        old.unlink()
    (job_dir / RESULT_FILE).unlink(missing_ok=True)
    job_file = job_dir / "job.json"
    job_file.write_text(json.dumps({"config_path": config_path, "run_dir": run_dir, "tracking": tracking,
                                    "train_run_id": train_run_id, "kwargs": train_kwargs}, default=str))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default too; said here so that it is not a warning
    cmd = torchrun_command(launch, job_file)
    stream = _stream_logger()
    stream.info("launching %s", " ".join(cmd))
    lines: list[str] = []
    with open(job_dir / "torchrun.log", "w", encoding="utf-8") as log_file:
        proc = subprocess.Popen(cmd, cwd=os.getcwd(), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        for line in proc.stdout:
            log_file.write(line)
            lines.append(line.rstrip())
            del lines[:-200]
            stream.info("%s", line.rstrip())
        returncode = proc.wait()
    if returncode != 0:
        raise RankFailedError(_failure_message(job_dir, returncode, lines))
    result_path = job_dir / RESULT_FILE
    if not result_path.is_file():
        raise RankFailedError(f"torchrun exited 0 but rank 0 wrote no {result_path}; see {job_dir / 'torchrun.log'}")
    return json.loads(result_path.read_text())


def _failure_message(job_dir: Path, returncode: int, lines: list[str]) -> str:
    """The error of the rank that failed first (the others usually fail because it left the group)."""
    errors = [json.loads(p.read_text()) for p in job_dir.glob("rank*.error.json")]
    if not errors:
        tail = "\n".join(lines[-30:])
        return f"torchrun failed with exit code {returncode} before a rank reported an error:\n{tail}"
    first = min(errors, key=lambda e: e["time"])
    others = sorted(e["rank"] for e in errors if e is not first)
    also = f" (ranks {others} failed after it)" if others else ""
    return f"rank {first['rank']} failed: {first['type']}: {first['message']}{also}\n{first['traceback'][-3000:]}"


def run_rank(job_file: str) -> int:
    """Entry of one rank: train, rank 0 writes the result; a failure writes ``rank<N>.error.json``."""
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format=f"[rank{rank}] %(asctime)s %(levelname)s %(name)s: %(message)s")
    job = json.loads(Path(job_file).read_text())
    job_dir = Path(job_file).parent
    try:
        import flows  # noqa: F401  (telemetry defaults)
        import flows.sweep_study  # noqa: F401  (registers the sweep's pruning hook, which may be among the hooks)
        from antgo.tracking.runs import PipelineTracker, TrackingContext
        from flows.tasks import run_trainer

        tracker = PipelineTracker(TrackingContext.from_dict(job["tracking"]))  # enabled on rank 0 only
        result = run_trainer(job["config_path"], job["run_dir"], tracker, job["train_run_id"], **job["kwargs"])
        for line in tracker.close():  # drained here: the rank ends without interpreter teardown (see below)
            logger.warning("MLflow did not receive: %s", line)
    except BaseException as exc:
        (job_dir / f"rank{rank}.error.json").write_text(json.dumps({
            "rank": rank, "time": time.time(), "type": type(exc).__name__, "message": str(exc),
            "traceback": traceback.format_exc()}))
        raise
    if rank == 0:
        tmp = job_dir / (RESULT_FILE + ".tmp")
        tmp.write_text(json.dumps(result, default=str))
        tmp.replace(job_dir / RESULT_FILE)
    return 0


def main(job_file: str) -> None:
    """Run the rank, then end the process without interpreter teardown (``antgo.engine.rank_exit``): its result
    and error files are written and its tracking queue drained by then."""
    from antgo.engine.rank_exit import exit_rank

    try:
        code = run_rank(job_file)
    except BaseException:  # already in rank<N>.error.json; the traceback also goes to the log
        traceback.print_exc()
        code = 1
    exit_rank(code)


if __name__ == "__main__":
    main(sys.argv[1])
