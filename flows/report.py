"""What the Prefect UI shows about a pipeline run: a progress bar while training, a link to the MLflow run,
and a markdown summary (metrics, parity verdict, artifacts) at the end."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from antgo.engine.hooks import Hook

logger = logging.getLogger("antgo.flows")


def in_prefect_run() -> bool:
    """True inside a Prefect flow or task run (artifacts need one)."""
    from prefect.context import FlowRunContext, TaskRunContext

    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


class PrefectProgressHook(Hook):
    """Keeps a Prefect progress artifact at ``iter / max_iters``: at the start and the end of training, and in
    between at most one API call per ``min_interval_s``."""

    priority = 95

    def __init__(self, key: str = "training-progress", min_interval_s: float = 2.0) -> None:
        self.key = key
        self.min_interval_s = min_interval_s
        self._artifact_id = None
        self._last = 0.0

    def _update(self, trainer: Any, force: bool = False) -> None:
        if getattr(trainer, "rank", 0) != 0 or not in_prefect_run():
            return
        now = time.monotonic()
        if not force and now - self._last < self.min_interval_s:
            return
        self._last = now
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        max_iters = max(int(getattr(trainer, "max_iters", 0) or 0), 1)
        progress = min(100.0, 100.0 * int(getattr(trainer, "iter", 0)) / max_iters)
        loss = (getattr(trainer, "log_vars", None) or {}).get("loss")
        text = f"epoch {trainer.epoch + 1}/{trainer.max_epochs}, iter {trainer.iter}/{max_iters}" + (
            f", loss {float(loss):.4f}" if loss is not None else "")
        try:
            if self._artifact_id is None:
                self._artifact_id = create_progress_artifact(progress, key=self.key, description=text)
            else:
                update_progress_artifact(self._artifact_id, progress, description=text)
        except Exception as exc:  # progress display is best effort: never fail training for it
            logger.debug("progress artifact update failed: %s", exc)

    def before_run(self, trainer: Any) -> None:
        self._update(trainer, force=True)

    def after_iter(self, trainer: Any) -> None:
        self._update(trainer)

    def after_epoch(self, trainer: Any) -> None:
        self._update(trainer)  # rate-limited too: short epochs would make an API call each

    def after_run(self, trainer: Any) -> None:
        self._update(trainer, force=True)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_markdown(summary: dict[str, Any]) -> str:
    """The run's summary as markdown: status, metrics table, parity verdict, model version, links, folders."""
    lines = [f"# antgo pipeline: {summary.get('status', '?')}", ""]
    lines += [f"- config: `{summary.get('config')}`", f"- run folder: `{summary.get('run_dir')}`"]
    if summary.get("mlflow_url"):
        lines.append(f"- MLflow run: [{summary.get('mlflow_run_id')}]({summary['mlflow_url']})")
    if summary.get("mlflow_experiment_url"):
        lines.append(f"- MLflow experiment (all runs): {summary['mlflow_experiment_url']}")
    if summary.get("error"):
        lines += ["", f"**{summary.get('status', 'Failed')} in stage `{summary.get('failed_stage')}`:** "
                      f"`{summary['error']}`"]
    if summary.get("resume"):
        lines += ["", f"Continue from the last checkpoint: `{summary['resume']}`"]
    metrics = {**{f"val best {summary.get('best_metric') or ''}".strip(): summary.get("best_score")},
               **(summary.get("test_metrics") or {})}
    metrics = {k: v for k, v in metrics.items() if v is not None}
    if metrics:
        lines += ["", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items()]
    parity = summary.get("parity")
    if parity is not None:
        verdict = "PASSED" if parity.get("passed") else "FAILED"
        lines += ["", f"## ONNX parity: {verdict}", "", "| check | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in parity.items() if isinstance(v, (int, float, bool, str))]
    model = summary.get("model") or {}
    if model.get("version"):
        alias = summary.get("alias_set")
        lines += ["", f"Registered model `{model.get('name')}` version {model['version']}"
                      + (f", alias `{alias}`" if alias else _no_alias(summary))]
    if summary.get("onnx_path"):
        lines.append(f"- ONNX: `{summary['onnx_path']}`")
    if summary.get("best_checkpoint"):
        lines.append(f"- best checkpoint: `{summary['best_checkpoint']}`")
    return "\n".join(lines) + "\n"


def _no_alias(summary: dict[str, Any]) -> str:
    champion = summary.get("champion_version")
    if champion:
        return f" (the alias stays on version {champion}: it scores better)"
    return " (no alias: not verified)"


def publish_summary(summary: dict[str, Any]) -> None:
    """Markdown artifact (and a link artifact to the MLflow run) on the current flow run."""
    if not in_prefect_run():
        return
    from prefect.artifacts import create_markdown_artifact

    try:
        create_markdown_artifact(summary_markdown(summary), key="pipeline-summary",
                                 description=f"antgo pipeline {summary.get('status')}: "
                                             f"{Path(str(summary.get('config'))).name}")
    except Exception:
        logger.exception("could not create the summary artifact")


def publish_mlflow_link(url: str | None, run_id: str | None, tracking_uri: str | None = None) -> None:
    """A link artifact on the flow run that opens the MLflow parent run (the tracking server's own address;
    for a local SQLite store the description says how to start the UI the link opens)."""
    if not url or not in_prefect_run():
        return
    from prefect.artifacts import create_link_artifact

    from antgo.tracking.store import browse_hint

    description = "The MLflow parent run of this pipeline (hyperparameters, metrics, artifacts)."
    if tracking_uri:
        description += f" To view it: {browse_hint(tracking_uri)}."
    try:
        create_link_artifact(url, link_text=f"MLflow run {run_id}", key="mlflow-run", description=description)
    except Exception:
        logger.exception("could not create the MLflow link artifact")
