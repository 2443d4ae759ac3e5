"""One MLflow parent run per pipeline and a nested child run per stage.

Everything goes through ``MlflowClient`` with explicit run ids: the active run of MLflow's fluent API is
thread-local, and Prefect may run stages in other threads. Only rank 0 logs; on other ranks the tracker
is a no-op.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from antgo.config.secrets import MASK, is_secret_key, mask_secrets
from antgo.tracking.lifecycle import close_orphaned_runs, owner_tags
from antgo.tracking.store import (PROJECT_ROOT, bound_http_retries, ensure_experiment, experiment_url,
                                  open_client, resolve_tracking_uri, run_url)
from antgo.tracking.transport import Op, Transport, release_transport, transport_for, undelivered_report

logger = logging.getLogger(__name__)

# MLflow limits (mlflow.utils.validation): param key 250 chars, value 6000, 100 params / 1000 metrics per batch.
MAX_PARAM_KEY = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 5000
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000


def is_rank_zero() -> bool:
    """True in a single process and on global rank 0 of a distributed job."""
    return int(os.environ.get("RANK", "0")) == 0


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file (the dumped config: same hash = same resolved config)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def git_commit(root: str | os.PathLike = PROJECT_ROOT) -> str | None:
    """HEAD of the repository holding the code, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{'a.b.c': v}`` from nested dicts (lists stay values): the shape MLflow params take."""
    if hasattr(obj, "flatten") and callable(obj.flatten) and not prefix:
        return dict(obj.flatten())
    out: dict[str, Any] = {}
    for key, value in obj.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


def error_text(exc: BaseException | str) -> str:
    """``Type: message`` cut to what an MLflow tag holds; a signal without a message is named."""
    text = exc if isinstance(exc, str) else f"{type(exc).__name__}: {str(exc) or _stop_cause(exc)}"
    return text if len(text) <= MAX_TAG_VALUE else text[: MAX_TAG_VALUE - 3] + "..."


def _stop_cause(exc: BaseException) -> str:
    """What stopped the run, for exceptions that carry no message (Prefect's TerminationSignal, Ctrl-C)."""
    import signal

    signum = getattr(exc, "signal", None)
    if isinstance(signum, int):
        try:
            return signal.Signals(signum).name
        except ValueError:
            return f"signal {signum}"
    if isinstance(exc, KeyboardInterrupt):
        return "SIGINT (Ctrl-C)"
    return ""


@dataclass
class TrackingContext:
    """What the stages need to reach the pipeline's parent run (small and JSON-able, passed between tasks).

    ``spool``: the file in the run folder where calls that could not be delivered are kept.
    """

    tracking_uri: str
    experiment_id: str
    parent_run_id: str | None
    spool: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrackingContext":
        return cls(**{k: data.get(k) for k in ("tracking_uri", "experiment_id", "parent_run_id", "spool")})


def is_interrupt(exc: BaseException | str | None) -> bool:
    """SIGTERM (Prefect's TerminationSignal), Ctrl-C, SystemExit: the run was killed, not failed."""
    return isinstance(exc, BaseException) and not isinstance(exc, Exception)


def mask_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Secret-looking keys masked, also inside ``key=value`` override strings (``--cfg-options``)."""
    masked = mask_secrets(dict(params))
    for key, value in masked.items():
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            masked[key] = [_mask_option(v) for v in value]
        elif isinstance(value, str):
            masked[key] = _mask_option(value)
    return masked


def _mask_option(text: str) -> str:
    """``data.x.password=v`` -> ``data.x.password=******``; other text (a markdown note, a path) unchanged."""
    key, sep, value = text.partition("=")
    if not (sep and value and _OPTION_KEY.match(key)):
        return text
    return f"{key}={MASK}" if is_secret_key(key.lstrip("+")) else text


_OPTION_KEY = re.compile(r"^\+?[\w.\-]+$")


class PipelineTracker:
    """Creates, logs to and closes the parent and child runs of one pipeline.

    Logging goes through the pipeline's :class:`~antgo.tracking.transport.Transport` (a bounded background
    queue); run creation and termination are bounded synchronous calls that return None while the store is
    unreachable.
    """

    def __init__(self, ctx: TrackingContext, enabled: bool | None = None) -> None:
        self.ctx = ctx
        # no parent run (tracking off or unavailable, rank != 0): nothing to log into
        self.enabled = (is_rank_zero() and bool(ctx.parent_run_id)) if enabled is None else enabled
        self._client = None
        self.closed_orphans: list[Any] = []  # parent runs of dead pipelines that start() marked KILLED
        self._parent_name: str | None = None

    # --- construction -------------------------------------------------------------------------------------
    @classmethod
    def start(cls, experiment: str, run_name: str, tracking_uri: str | None = None,
              tags: Mapping[str, Any] | None = None, spool: str | os.PathLike | None = None) -> "PipelineTracker":
        """Open the parent run of a pipeline in ``experiment`` (created on demand)."""
        bound_http_retries()
        uri = resolve_tracking_uri(tracking_uri)
        if not is_rank_zero():
            return cls(TrackingContext(uri, "", None), enabled=False)
        client = open_client(uri)
        exp_id = ensure_experiment(client, experiment, uri)
        all_tags = {"antgo.pipeline": "true", **owner_tags(),
                    **{k: str(v) for k, v in mask_params(tags or {}).items() if v is not None}}
        commit = git_commit()
        if commit:
            all_tags.setdefault("mlflow.source.git.commit", commit)
            all_tags.setdefault("antgo.git_commit", commit)
        try:
            orphans = close_orphaned_runs(client, exp_id)
        except Exception as exc:  # housekeeping of earlier pipelines must not stop this one
            logger.warning("could not check experiment %r for runs left RUNNING by killed pipelines: %s",
                           experiment, exc)
            orphans = []
        run = client.create_run(exp_id, run_name=run_name, tags=all_tags)
        tracker = cls(TrackingContext(uri, exp_id, run.info.run_id, str(spool) if spool else None), enabled=True)
        tracker._client = client
        tracker.closed_orphans = orphans
        tracker._parent_name = run_name
        logger.info("MLflow run %s in experiment %r (%s)", run.info.run_id, experiment, uri)
        return tracker

    @classmethod
    def disabled(cls, tracking_uri: str) -> "PipelineTracker":
        """A tracker that logs nothing (tracking optional and the store unreachable, or tracking off)."""
        return cls(TrackingContext(tracking_uri, "", None), enabled=False)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = open_client(self.ctx.tracking_uri)
        return self._client

    @property
    def transport(self) -> Transport:
        """The pipeline's transport, shared by every tracker built from the same context in this process."""
        return transport_for(self.ctx.parent_run_id or self.ctx.tracking_uri, self.ctx.tracking_uri, self.ctx.spool)

    @property
    def parent_run_id(self) -> str | None:
        return self.ctx.parent_run_id

    def url(self, run_id: str | None = None) -> str | None:
        """Link to ``run_id`` (default: the parent run) in the MLflow UI."""
        run_id = run_id or self.ctx.parent_run_id
        return run_url(self.ctx.tracking_uri, self.ctx.experiment_id, run_id) if run_id else None

    def _active(self, run_id: str | None) -> bool:
        return self.enabled and run_id is not None

    def child_name(self, stage: str) -> str:
        """``<parent run name>/<stage>``: charts and the Compare page can tell two pipelines' stages apart."""
        if self._parent_name is None and self.ctx.parent_run_id:
            self._parent_name = self.client.get_run(self.ctx.parent_run_id).info.run_name or ""
        return f"{self._parent_name}/{stage}" if self._parent_name else stage

    def experiment_url(self) -> str | None:
        """Link to the experiment's runs table (training view) in the MLflow UI."""
        return experiment_url(self.ctx.tracking_uri, self.ctx.experiment_id) if self.ctx.experiment_id else None

    # --- runs ---------------------------------------------------------------------------------------------
    def start_child(self, name: str, tags: Mapping[str, Any] | None = None) -> str | None:
        """A nested run under the parent (``mlflow.parentRunId`` is what makes the UI nest it); the stage name
        is in the ``antgo.stage`` tag, the run name is :meth:`child_name`.

        None while the store is unreachable: the stage then runs without a run of its own.
        """
        if not self.enabled:
            return None
        all_tags = {"mlflow.parentRunId": self.ctx.parent_run_id, "antgo.stage": name}
        all_tags.update({k: str(v) for k, v in mask_params(tags or {}).items() if v is not None})
        run = self.transport.call(Op("run", self.ctx.parent_run_id, {"call": f"create child run {name}"},
                                     lambda: self.client.create_run(self.ctx.experiment_id,
                                                                    run_name=self.child_name(name), tags=all_tags)))
        return run.info.run_id if run is not None else None

    def end(self, run_id: str | None, error: BaseException | str | None = None) -> None:
        """FINISHED, FAILED with the error text in the ``error`` tag, or KILLED when the process was stopped."""
        if not self._active(run_id):
            return
        status = "KILLED" if is_interrupt(error) else "FAILED" if error is not None else "FINISHED"

        def send() -> None:
            if error is not None:
                self.client.set_tag(run_id, "error", error_text(error))
            self.client.set_terminated(run_id, status=status)

        # status and error in the payload: a replay of the spool can end the run as it ended here
        payload = {"call": f"set_terminated {status}", "status": status,
                   "error": error_text(error) if error is not None else None}
        # a stopped process drains for seconds, not for the full flush deadline
        self.transport.call(Op("run", run_id, payload, send),
                            flush_timeout=5.0 if is_interrupt(error) else None)

    @contextmanager
    def stage(self, name: str, tags: Mapping[str, Any] | None = None) -> Iterator["StageRun"]:
        """Child run for one stage; an exception marks it FAILED (with ``error``) and propagates."""
        run = StageRun(self, self.start_child(name, tags))
        try:
            yield run
        except BaseException as exc:
            try:
                self.end(run.run_id, exc)
            except Exception:  # the original error matters more than a tracking hiccup
                logger.exception("could not mark MLflow run of stage %s as failed", name)
            raise
        self.end(run.run_id)

    def guarded(self, run_id: str | None, what: str, send: Callable[[], Any]) -> Any:
        """A synchronous call that is not a plain log (model registry, fluent API): None when the store is down."""
        if not self._active(run_id):
            return None
        return self.transport.call(Op("run", run_id, {"call": what}, send))

    def close(self, timeout: float | None = None) -> list[str]:
        """Drain the queue (bounded) and return one line per kind of call that was not delivered."""
        if not self.enabled:
            return []
        transport = release_transport(self.ctx.parent_run_id or self.ctx.tracking_uri)
        return undelivered_report(transport.close(timeout)) if transport is not None else []

    # --- logging ------------------------------------------------------------------------------------------
    def set_tags(self, run_id: str | None, tags: Mapping[str, Any]) -> None:
        if not self._active(run_id):
            return
        from mlflow.entities import RunTag

        texts = {k: error_text(str(v)) for k, v in mask_params(tags).items() if v is not None}
        items = [RunTag(k, v) for k, v in texts.items()]
        for i in range(0, len(items), 100):
            chunk = items[i:i + 100]
            self.transport.submit(Op("tags", run_id, {"tags": {t.key: t.value for t in chunk}},
                                     lambda chunk=chunk: self.client.log_batch(run_id, tags=chunk)))

    def log_params(self, run_id: str | None, params: Mapping[str, Any]) -> None:
        """Log a flat dict as params (secrets masked), cut to MLflow's key/value limits, 100 per call."""
        if not self._active(run_id):
            return
        from mlflow.entities import Param

        items: dict[str, str] = {}
        for key, value in mask_params(params).items():
            key = str(key)[:MAX_PARAM_KEY]
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            items.setdefault(key, text if len(text) <= MAX_PARAM_VALUE else text[: MAX_PARAM_VALUE - 3] + "...")
        pairs = [Param(k, v) for k, v in items.items()]
        for i in range(0, len(pairs), PARAMS_PER_BATCH):
            chunk = pairs[i:i + PARAMS_PER_BATCH]
            self.transport.submit(Op("params", run_id, {"params": {p.key: p.value for p in chunk}},
                                     lambda chunk=chunk: self.client.log_batch(run_id, params=chunk)))

    def log_metrics(self, run_id: str | None, metrics: Mapping[str, Any], step: int = 0) -> None:
        """Numeric entries of ``metrics`` at ``step`` in one call (non-numbers are skipped)."""
        if not self._active(run_id):
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.log_metric_batch(run_id, [Metric(str(k), float(v), now, int(step))
                                       for k, v in metrics.items() if is_number(v)])

    def log_metric_batch(self, run_id: str | None, metrics: list[Any]) -> int:
        """Queue ``mlflow.entities.Metric`` objects, at most MLflow's 1000 per call; returns the calls queued."""
        if not self._active(run_id):
            return 0
        calls = 0
        for i in range(0, len(metrics), METRICS_PER_BATCH):
            chunk = metrics[i:i + METRICS_PER_BATCH]
            payload = {"metrics": [(m.key, m.value, m.step, m.timestamp) for m in chunk]}  # replayed as logged
            self.transport.submit(Op("metrics", run_id, payload,
                                     lambda chunk=chunk: self.client.log_batch(run_id, metrics=chunk)))
            calls += 1
        return calls

    def log_artifact(self, run_id: str | None, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        if not self._active(run_id):
            return
        path = Path(path)

        def send() -> None:
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path)
            else:
                self.client.log_artifact(run_id, str(path), artifact_path)

        self.transport.submit(Op("artifact", run_id, {"path": str(path), "artifact_path": artifact_path}, send))

    def log_dict(self, run_id: str | None, data: Any, artifact_file: str) -> None:
        """``data`` as a JSON artifact named ``artifact_file`` (may contain a folder)."""
        if not self._active(run_id):
            return
        text = json.dumps(data, indent=2, default=str)
        folder = str(Path(artifact_file).parent)

        def send() -> None:  # the file exists only while it is sent: the queue may send it later
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / Path(artifact_file).name
                path.write_text(text)
                self.client.log_artifact(run_id, str(path), None if folder == "." else folder)

        payload = {"path": artifact_file, "data": data if len(text) <= 100_000 else "(too large to keep)"}
        self.transport.submit(Op("artifact", run_id, payload, send))


class StageRun:
    """The child run of one stage: the tracker's logging methods with the run id filled in."""

    def __init__(self, tracker: PipelineTracker, run_id: str | None) -> None:
        self.tracker = tracker
        self.run_id = run_id

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.tracker.set_tags(self.run_id, tags)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.tracker.log_params(self.run_id, params)

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        self.tracker.log_metrics(self.run_id, metrics, step)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.tracker.log_artifact(self.run_id, path, artifact_path)

    def log_dict(self, data: Any, artifact_file: str) -> None:
        self.tracker.log_dict(self.run_id, data, artifact_file)


def is_number(value: Any) -> bool:
    """True for values MLflow can store as a metric (bools excluded)."""
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def close_runs_of_flow_run(tracking_uri: str, flow_run_id: str, status: str = "KILLED",
                           reason: str = "flow run crashed or was cancelled") -> list[str]:
    """Close the still-RUNNING MLflow runs (parent and children) of a Prefect flow run.

    For flow runs that die without reaching the flow's own error handling (cancellation, SIGTERM, OOM kill
    of a subprocess), so that MLflow does not show them as running forever. Returns the closed run ids.
    """
    client = open_client(tracking_uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    parents = client.search_runs(experiments, filter_string=f"tags.`prefect.flow_run_id` = '{flow_run_id}'")
    closed = []
    for parent in parents:
        children = client.search_runs([parent.info.experiment_id],
                                      filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        for run in [*children, parent]:
            if run.info.status == "RUNNING":
                client.set_tag(run.info.run_id, "error", error_text(reason))
                client.set_terminated(run.info.run_id, status=status)
                closed.append(run.info.run_id)
    return closed
