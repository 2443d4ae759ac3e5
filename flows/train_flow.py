"""The ``antgo`` Prefect flow: parse config -> data -> train -> evaluate -> export ONNX -> verify parity.

Script usage::

    python flows/train_flow.py CONFIG [--cfg-options k=v ...] [--work-dir D] [--max-epochs N]
                                      [--tracking required|optional|off]
    python flows/train_flow.py --serve            # serve deployment antgo/full-pipeline

Each run writes into a new folder ``<work_dir>/<YYYYmmdd-HHMMSS>-<flow run name>/`` (``work_dir`` defaults to
``work_dirs/<config stem>``), so re-running never mixes results; ``--resume FOLDER`` (or ``latest``)
continues an existing folder from its ``latest.pth``. MLflow: one parent run per pipeline, one child run per
stage, in ``<repo>/mlruns`` unless ``MLFLOW_TRACKING_URI`` or ``--tracking-uri`` says otherwise.

Tracking (``--tracking``, else ``$ANTGO_TRACKING``, else the config's ``mlflow.tracking``, else ``required``):
an unreachable store fails the pipeline before anything is created when it is ``required``; ``optional`` warns
and runs without MLflow (everything stays in the run folder); ``off`` never contacts it. Without
``PREFECT_API_URL`` the script starts a temporary Prefect server that it owns and stops (``flows/server.py``).
"""
from __future__ import annotations

import argparse
import json
import inspect
import logging
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

# Runnable as `python flows/train_flow.py` and as Prefect entrypoint `flows/train_flow.py:antgo`: both load
# this file by path, so the repository root must be importable for `flows.*` and `antgo`.
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import flows  # noqa: E402,F401  (sets telemetry/logging defaults before prefect is imported)

from prefect import flow  # noqa: E402

from antgo.engine.runlock import RunFolderLost, RunLock, ensure_held  # noqa: E402
from antgo.fileio import atomic_write_text  # noqa: E402
from antgo.tracking.runs import PipelineTracker, error_text, is_interrupt  # noqa: E402
from antgo.tracking.store import (TrackingUnavailableError, browse_hint, check_reachable,  # noqa: E402
                                  resolve_tracking_uri)
from antgo.tracking.replay import replay_command  # noqa: E402
from antgo.tracking.transport import SPOOL_NAME  # noqa: E402
from flows import tasks  # noqa: E402
from flows.server import crash_flow_run, flow_run_cancelling, script_server  # noqa: E402
from flows.termination import on_forced_exit  # noqa: E402
from flows.tracking_mode import (TRACKING_MODES, check_tracking, open_tracker,  # noqa: E402
                                 replay_earlier_outage, tracking_mode)
from flows.report import publish_mlflow_link, publish_summary, summary_markdown  # noqa: E402

logger = logging.getLogger("antgo.flows")

DEFAULT_CONFIG = "configs/demo/demo_seg.py"
DEPLOYMENT_NAME = "full-pipeline"


def resolve_config(config: str) -> Path:
    """A config path as given (relative to the working directory), else relative to the repository."""
    path = Path(config).expanduser()
    if not path.is_absolute() and not path.exists() and (_ROOT / path).exists():
        path = _ROOT / path
    if not path.is_file():
        places = " and ".join(dict.fromkeys(str(p) for p in (Path.cwd(), _ROOT)))
        raise FileNotFoundError(f"config file {config} not found (looked in {places}); check the path")
    return path.resolve()


def make_run_dir(work_dir: str | None, config_path: Path, resume: str | None, run_name: str | None) -> Path:
    """A new ``<work_dir>/<timestamp>-<run name>`` folder, or the existing folder named by ``resume``."""
    base = Path(work_dir) if work_dir else Path("work_dirs") / config_path.stem
    base = base.resolve()
    if resume:
        if resume == "latest":
            runs = sorted((p for p in base.glob("*") if p.is_dir()), key=lambda p: (p.stat().st_mtime, p.name))
            if not runs:
                raise FileNotFoundError(f"resume='latest': no run folder under {base}")
            return runs[-1]
        folder = Path(resume) if Path(resume).is_absolute() or Path(resume).exists() else base / resume
        if not folder.is_dir():
            raise FileNotFoundError(f"resume={resume!r}: {folder} is not an existing run folder")
        return folder.resolve()
    stem = time.strftime("%Y%m%d-%H%M%S") + (f"-{run_name}" if run_name else "")
    for i in range(100):  # two runs in the same second without a flow-run name: add a suffix
        candidate = base / (stem if i == 0 else f"{stem}-{i}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a new run folder under {base}")


def _flow_run() -> tuple[str | None, str | None]:
    from prefect.runtime import flow_run

    return (str(flow_run.id) if flow_run.id else None), (flow_run.name or None)


def _close_mlflow_runs(flow: Any, flow_run: Any, state: Any) -> None:
    """on_crashed/on_cancellation: the flow body never reached its own handler; close its MLflow runs."""
    from antgo.tracking.runs import close_runs_of_flow_run

    try:
        uri = resolve_tracking_uri((flow_run.parameters or {}).get("tracking_uri"))
        if check_reachable(uri, timeout=2.0) is not None:  # a dead server: the next start closes them
            logger.warning("MLflow at %s unreachable: runs of flow run %s are closed at the next start", uri,
                           flow_run.id)
            return
        closed = close_runs_of_flow_run(uri, str(flow_run.id), reason=f"Prefect state {state.name}: "
                                                                       f"{state.message or ''}".strip())
        if closed:
            logger.warning("marked %d MLflow run(s) KILLED after %s", len(closed), state.name)
    except Exception:
        logger.exception("could not close the MLflow runs of flow run %s", flow_run.id)


@flow(name="antgo", description="antgo pipeline: config -> data -> train -> test -> ONNX -> parity",
      validate_parameters=True, on_crashed=[_close_mlflow_runs], on_cancellation=[_close_mlflow_runs])
def antgo(config: str = DEFAULT_CONFIG, cfg_options: list[str] | None = None, work_dir: str | None = None,
          max_epochs: int | None = None, device: str | None = None, experiment: str | None = None,
          tracking_uri: str | None = None, parity_thresholds: dict[str, float] | None = None,
          parity_samples: int | None = None, num_vis: int = 4, alias: str = "champion",
          resume: str | None = None, loader_context: str | None = "fork", nproc_per_node: int | None = None,
          launch: dict[str, Any] | None = None, tracking: str | None = None) -> dict[str, Any]:
    """Run every stage of the pipeline; returns the summary (metrics, parity, paths, MLflow ids).

    ``max_epochs`` None = the config's ``max_epochs``; ``parity_thresholds`` override the config's;
    ``alias`` goes to the best registered version that passed parity (by the ``save_best`` metric);
    ``loader_context`` is the DataLoader workers' multiprocessing context (fork avoids re-importing this module
    per worker); ``nproc_per_node`` > 1 (or ``launch``: torchrun's multi-node options, see flows/launch.py)
    trains under torchrun; ``tracking``: required / optional / off (None: ``$ANTGO_TRACKING``, the config's
    ``mlflow.tracking``).
    """
    launch = {**(launch or {}), **({"nproc_per_node": nproc_per_node} if nproc_per_node else {})}
    with _antgo_logs_at_info(), _closed_on_forced_exit(_flow_run()[0], tracking_uri):
        return _run_pipeline(config, cfg_options, work_dir, max_epochs, device, experiment, tracking_uri,
                             parity_thresholds, parity_samples, num_vis, alias, resume, loader_context, launch,
                             tracking)


@contextmanager
def _antgo_logs_at_info() -> Iterator[None]:
    """Every stage's library logs (not only training's) reach the console and Prefect; restored afterwards."""
    antgo_logger = logging.getLogger("antgo")
    previous = antgo_logger.level
    if previous == logging.NOTSET:
        antgo_logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        antgo_logger.setLevel(previous)


@contextmanager
def _closed_on_forced_exit(flow_run_id: str | None, tracking_uri: str | None) -> Iterator[None]:
    """Should the SIGTERM guard end the process (its cleanup stuck), this flow run's MLflow runs end KILLED and
    its Prefect run Crashed, as the normal unwinding would have left them."""
    from prefect.settings import PREFECT_API_URL

    from antgo.tracking.runs import close_runs_of_flow_run

    if not flow_run_id:
        yield
        return
    reason = "SIGTERM: the pipeline did not finish its cleanup in time and was ended"
    api, uri = PREFECT_API_URL.value(), resolve_tracking_uri(tracking_uri)
    crash = on_forced_exit("mark the Prefect flow run Crashed",
                           lambda: crash_flow_run(flow_run_id, reason, api)) if api else nullcontext()
    kill = on_forced_exit("mark the MLflow runs KILLED",
                          lambda: close_runs_of_flow_run(uri, flow_run_id, reason=reason))
    with crash, kill:  # run latest first: MLflow, then Prefect, then the temporary server stops
        yield


def _run_pipeline(config: str, cfg_options: list[str] | None, work_dir: str | None, max_epochs: int | None,
                  device: str | None, experiment: str | None, tracking_uri: str | None,
                  parity_thresholds: dict[str, float] | None, parity_samples: int | None, num_vis: int,
                  alias: str, resume: str | None, loader_context: str | None,
                  launch: dict[str, Any] | None = None, tracking: str | None = None) -> dict[str, Any]:
    """The flow's body: open the MLflow parent run, call the stage tasks in order, close and summarise."""
    config_path = resolve_config(config)
    mode = tracking_mode(tracking, config_path, cfg_options)
    uri = resolve_tracking_uri(tracking_uri)
    reachable = check_tracking(mode, uri)  # before the run folder: an unreachable required store leaves nothing
    flow_run_id, flow_run_name = _flow_run()
    run_dir = make_run_dir(work_dir, config_path, resume, flow_run_name)
    run_lock = RunLock(run_dir, purpose="flow").acquire()  # the Trainer's lock: a folder in use is refused
    try:
        if resume:
            replay_earlier_outage(run_dir, uri, reachable)
        tracker = open_tracker(mode, reachable, uri, experiment or config_path.stem, run_dir, tags={
            "prefect.flow_run_id": flow_run_id, "prefect.flow_run_name": flow_run_name,
            "antgo.config": str(config_path), "antgo.run_dir": str(run_dir)})
    except BaseException:
        run_lock.release()
        raise
    summary: dict[str, Any] = {
        "status": "Running", "config": str(config_path), "run_dir": str(run_dir),
        "tracking_uri": tracker.ctx.tracking_uri, "experiment_id": tracker.ctx.experiment_id,
        "mlflow_run_id": tracker.parent_run_id, "mlflow_url": tracker.url(),
        "mlflow_experiment_url": tracker.experiment_url(), "flow_run_id": flow_run_id,
        "tracking": mode if tracker.enabled else f"{mode}: not used"}
    logger.info("pipeline run folder: %s", run_dir)
    track = tracker.ctx.to_dict()
    cfg_path = None
    stage = "start"  # from here on a failure closes the parent run as FAILED
    try:
        # every flow parameter but tracking_uri (it can hold credentials; the run is in that store anyway)
        tracker.log_params(tracker.parent_run_id, {
            "pipeline.config": str(config_path), "pipeline.cfg_options": cfg_options or [],
            "pipeline.work_dir": work_dir, "pipeline.max_epochs": max_epochs, "pipeline.device": device,
            "pipeline.experiment": experiment, "pipeline.parity_thresholds": parity_thresholds,
            "pipeline.parity_samples": parity_samples, "pipeline.num_vis": num_vis, "pipeline.alias": alias,
            "pipeline.resume": resume, "pipeline.loader_context": loader_context, "pipeline.launch": launch or None,
            "pipeline.tracking": tracking})
        publish_mlflow_link(tracker.url(), tracker.parent_run_id, tracker.ctx.tracking_uri)
        stage = "parse_config"
        parsed = tasks.parse_config(str(config_path), cfg_options, str(run_dir), track, loader_context)
        cfg_path = parsed["config_path"]
        summary["config_hash"] = parsed["config_hash"]
        stage = "build_dataloaders"
        summary["data"] = tasks.build_dataloaders(cfg_path, str(run_dir), track)
        stage = "train"
        trained = tasks.train(cfg_path, str(run_dir), track, max_epochs=max_epochs, device=device,
                              resume=bool(resume), launch=launch or None)
        summary.update(best_checkpoint=trained["checkpoint"], best_score=trained["best_score"],
                       best_metric=trained["best_metric"], epochs=trained["epochs"], iters=trained["iters"])
        stage = "evaluate"
        evaluated = tasks.evaluate(cfg_path, str(run_dir), trained["checkpoint"], track, num_vis=num_vis,
                                   device=device)
        summary.update(test_metrics=evaluated["metrics"], plots=evaluated["plots"])
        stage = "export"
        exported = tasks.export(cfg_path, str(run_dir), trained["checkpoint"], track,
                                parsed["registered_model_name"])
        summary.update(onnx_path=exported["onnx_path"],
                       model={k: exported.get(k) for k in ("name", "version", "model_uri")})
        stage = "verify"
        verified = tasks.verify(cfg_path, str(run_dir), exported["onnx_path"], trained["checkpoint"], track,
                                model_name=exported.get("name"), model_version=exported.get("version"),
                                alias=alias, thresholds=parity_thresholds, num_samples=parity_samples,
                                test_metrics=evaluated["metrics"], config_hash=parsed["config_hash"],
                                score_metric=trained["best_metric"])
        summary.update(parity=_parity_summary(verified["report"], True), alias_set=verified["alias"],
                       champion_version=verified["champion"])
    except BaseException as exc:
        summary.update(status=_stop_status(exc, flow_run_id), failed_stage=stage, error=error_text(exc))
        _add_resume_hint(summary, run_dir, cfg_path, stage)
        report = getattr(exc, "report", None)
        if stage == "verify" and isinstance(report, dict):
            summary["parity"] = _parity_summary(report, False)
        _finish(tracker, summary, exc)
        run_lock.release()
        try:
            exc.antgo_summary = summary  # the CLI prints where things are even after a failure
        except AttributeError:
            pass
        raise
    summary["status"] = "Completed"
    _finish(tracker, summary, None)
    run_lock.release()
    return summary


def _stop_status(exc: BaseException, flow_run_id: str | None) -> str:
    """Failed (an error), Cancelled (the Prefect run was cancelled) or Stopped (SIGTERM, Ctrl-C)."""
    if not is_interrupt(exc):
        return "Failed"
    # bounded: after SIGTERM the cleanup has ANTGO_TERM_GRACE_S (10 s) in all
    return "Cancelled" if flow_run_id and flow_run_cancelling(flow_run_id, timeout=2.0) else "Stopped"


def _add_resume_hint(summary: dict[str, Any], run_dir: Path, cfg_path: str | None, stage: str) -> None:
    """``summary['resume']``: the command that continues the folder, when it has a ``latest.pth``. Best
    effort: the summary, the MLflow runs and the lock are closed after this whatever happens here."""
    try:
        if tasks.can_resume(str(run_dir), cfg_path):
            summary["resume"] = resume_command(_flow_parameters(), str(run_dir), _deployment_name())
            logger.warning("pipeline %s in stage %s; continue it from its last checkpoint with:\n  %s",
                           summary["status"], stage, summary["resume"])
    except Exception:
        logger.exception("could not work out how to resume %s", run_dir)


def _flow_parameters() -> dict[str, Any]:
    from prefect.runtime import flow_run

    return dict(flow_run.parameters or {})


def _deployment_name() -> str | None:
    """``antgo/<deployment>`` when a deployment started this flow run, else None (the command line)."""
    from prefect.runtime import deployment

    return f"antgo/{deployment.name}" if deployment.id and deployment.name else None


# flow parameter -> command-line option (parameters without one, e.g. launch and loader_context, are left out)
_CLI_OPTIONS = {"cfg_options": "--cfg-options", "max_epochs": "--max-epochs", "device": "--device",
                "experiment": "--experiment", "tracking_uri": "--tracking-uri", "parity_thresholds": "--parity",
                "parity_samples": "--parity-samples", "num_vis": "--num-vis", "alias": "--alias",
                "nproc_per_node": "--nproc-per-node", "tracking": "--tracking"}


def resume_command(parameters: dict[str, Any], run_dir: str, deployment: str | None = None) -> str:
    """The command that continues ``run_dir`` from its ``latest.pth`` with the run's other settings: a
    ``prefect deployment run`` when a deployment started it, else the flow script."""
    defaults = {k: v.default for k, v in inspect.signature(antgo.fn).parameters.items()}
    changed = {k: v for k, v in parameters.items()
               if k in defaults and k not in ("config", "work_dir", "resume") and v != defaults[k]}
    config = str(parameters.get("config") or DEFAULT_CONFIG)
    if deployment:
        parts = ["prefect", "deployment", "run", deployment, "--param", f"config={config}"]
        for key, value in {**changed, "resume": run_dir}.items():
            parts += ["--param", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
        return shlex.join(parts)
    try:  # absolute paths: the command must run from any folder, not only from the repository
        config = str(resolve_config(config))
    except FileNotFoundError:
        pass
    parts = [sys.executable or "python", str(Path(__file__).resolve()), config, "--resume", run_dir]
    for key, value in changed.items():
        option = _CLI_OPTIONS.get(key)
        if option is None or value is None:
            continue
        if key == "cfg_options":
            parts += [option, *value]
        elif key == "parity_thresholds":
            parts += [option, *(f"{name}={limit}" for name, limit in value.items())]
        else:
            parts += [option, str(value)]
    return shlex.join(parts)


def _parity_summary(report: dict[str, Any], passed: bool) -> dict[str, Any]:
    """Verdict, failures and the numeric checks of a parity report (small enough for the summary)."""
    flat: dict[str, Any] = {"passed": bool((report or {}).get("passed", passed))}
    if (report or {}).get("failures"):
        flat["failures"] = "; ".join(map(str, report["failures"]))
    numbers = tasks.parity_numbers(report or {})
    numbers.pop("passed", None)  # keep the verdict a bool
    flat.update(numbers)
    return flat


def _finish(tracker: PipelineTracker, summary: dict[str, Any], exc: BaseException | None) -> None:
    """Close the parent run, keep a summary.json in the run folder (unless another run took the folder over),
    publish the Prefect summary."""
    folder_ours = _folder_still_ours(Path(summary["run_dir"]))  # else the summary is in MLflow and Prefect only
    try:
        if folder_ours:
            _keep_previous_summary(Path(summary["run_dir"]), summary.get("flow_run_id"))
            atomic_write_text(Path(summary["run_dir"], "summary.json"), json.dumps(summary, indent=2, default=str))
            tracker.log_artifact(tracker.parent_run_id, Path(summary["run_dir"]) / "summary.json")
    except Exception:
        logger.exception("could not write the run summary")
    try:  # the run's description in the MLflow UI
        tracker.set_tags(tracker.parent_run_id, {"mlflow.note.content": summary_markdown(summary)})
    except Exception:
        logger.exception("could not set the MLflow run description")
    try:
        tracker.end(tracker.parent_run_id, exc)
    except Exception:
        logger.exception("could not close the MLflow parent run")
    _report_undelivered(tracker, summary, exc, folder_ours)
    publish_summary(summary)


def _folder_still_ours(run_dir: Path) -> bool:
    """False when another host took the run folder over (this process was paused past the lock's stale limit):
    nothing more may be written there, the earlier summary of the folder's new run included."""
    try:
        ensure_held(run_dir, "writing the run summary")
    except RunFolderLost as lost:
        logger.error("%s", lost)
        return False
    return True


def _keep_previous_summary(run_dir: Path, flow_run_id: str | None) -> None:
    """A resumed folder keeps the summary of its earlier attempt as ``summary.<its time>.json``."""
    path = run_dir / "summary.json"
    try:
        previous = json.loads(path.read_text())
    except OSError:
        return
    except ValueError:
        previous = {}
    if previous.get("flow_run_id") == flow_run_id and flow_run_id:
        return
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
    path.rename(run_dir / f"summary.{stamp}.json")


def _report_undelivered(tracker: PipelineTracker, summary: dict[str, Any], exc: BaseException | None,
                        folder_ours: bool = True) -> None:
    """Drain the tracking queue (seconds only after SIGTERM) and warn about what MLflow never received."""
    lines = tracker.close(timeout=3.0 if is_interrupt(exc) else None)
    if not lines:
        return
    summary["tracking_undelivered"] = lines
    logger.warning("MLflow at %s did not receive everything (kept in %s):\n  %s\nSend it once the store is back: "
                   "%s", tracker.ctx.tracking_uri, tracker.ctx.spool, "\n  ".join(lines),
                   replay_command(summary["run_dir"]))
    if not folder_ours:
        return
    try:
        atomic_write_text(Path(summary["run_dir"], "summary.json"), json.dumps(summary, indent=2, default=str))
    except OSError:
        logger.exception("could not write the run summary")


def format_summary(summary: dict[str, Any]) -> str:
    """The CLI's closing report: metrics, parity verdict, artifacts and how to browse them."""
    lines = [f"antgo pipeline {summary.get('status')}: {summary.get('config')}"]
    if summary.get("error"):
        lines.append(f"  {str(summary.get('status', 'failed')).lower()} in stage {summary.get('failed_stage')}: "
                     f"{summary['error']}")
    if summary.get("best_score") is not None:
        lines.append(f"  best val {summary.get('best_metric')}: {summary['best_score']:.4f} "
                     f"({summary.get('epochs')} epochs, {summary.get('iters')} iterations)")
    for key, value in (summary.get("test_metrics") or {}).items():
        lines.append(f"  test {key}: {value:.4f}")
    parity = summary.get("parity")
    if parity is not None:
        shown = ("max_abs_diff", "mean_abs_diff", "argmax_agreement", "max_diff", "num_samples")
        numbers = ", ".join(f"{k}={v:.3g}" for k, v in parity.items()
                            if k.endswith(shown) and isinstance(v, (int, float)) and not isinstance(v, bool))
        lines.append(f"  ONNX parity: {'PASSED' if parity.get('passed') else 'FAILED'} ({numbers})")
        if parity.get("failures"):
            lines.append(f"    failures: {parity['failures']}")
    model = summary.get("model") or {}
    if model.get("version"):
        alias = summary.get("alias_set")
        lines.append(f"  registered model: {model.get('name')} v{model['version']}"
                     + (f" (alias @{alias})" if alias else f" (no alias; champion v{summary['champion_version']})"
                        if summary.get("champion_version") else " (no alias)"))
    if summary.get("tracking_undelivered"):
        lines.append(f"  WARNING: MLflow did not receive (kept in {Path(summary['run_dir']) / SPOOL_NAME}):")
        lines += [f"    {line}" for line in summary["tracking_undelivered"]]
        lines.append(f"    send it once the store is back: {replay_command(summary['run_dir'])}")
    lines.append(f"  run folder: {summary.get('run_dir')}")
    if summary.get("resume"):
        lines.append(f"  continue it: {summary['resume']}")
    if summary.get("onnx_path"):
        lines.append(f"  ONNX: {summary['onnx_path']}")
    if summary.get("best_checkpoint"):
        lines.append(f"  best checkpoint: {summary['best_checkpoint']}")
    if not summary.get("mlflow_url"):  # tracking off, or optional with the store unreachable
        mode = str(summary.get("tracking") or "").split(":")[0]
        lines.append(f"  MLflow: not used (tracking {mode}); everything is in the run folder")
        return "\n".join(lines)
    uri = summary.get("tracking_uri") or resolve_tracking_uri()
    lines.append(f"  MLflow run: {summary['mlflow_url']}")
    if summary.get("mlflow_experiment_url"):
        lines.append(f"  MLflow experiment: {summary['mlflow_experiment_url']}")
    lines.append(f"  browse: {browse_hint(uri)}")
    return "\n".join(lines)


def serve_deployment(name: str = DEPLOYMENT_NAME, **kwargs: Any) -> None:
    """Serve deployment ``antgo/<name>``: poll the Prefect API and run triggered flows in subprocesses."""
    antgo.serve(name=name, tags=["antgo"], description="antgo full pipeline (default: the demo config)",
                **kwargs)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Run the antgo pipeline as a Prefect flow.")
    p.add_argument("config", nargs="?", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    p.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE", help="dotted config overrides")
    p.add_argument("--work-dir", default=None, help="parent of the run folders (default work_dirs/<config stem>)")
    p.add_argument("--max-epochs", type=int, default=None, help="default: the config's max_epochs")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default: the config file stem)")
    p.add_argument("--tracking-uri", default=None, help="MLflow URI (default $MLFLOW_TRACKING_URI, else sqlite <repo>/mlruns/mlflow.db)")
    p.add_argument("--parity", nargs="+", default=None, metavar="NAME=VALUE", help="parity thresholds")
    p.add_argument("--parity-samples", type=int, default=None)
    p.add_argument("--num-vis", type=int, default=4, help="prediction overlays to log")
    p.add_argument("--alias", default="champion", help="alias for a registered version that passes parity")
    p.add_argument("--resume", default=None, help="existing run folder (or 'latest') to continue")
    p.add_argument("--nproc-per-node", type=int, default=None, help="train under torchrun with N processes")
    p.add_argument("--tracking", choices=TRACKING_MODES, default=None,
                   help="MLflow: required (default; an unreachable store fails at once), optional (warn, run "
                        "without it), off. Also $ANTGO_TRACKING or mlflow=dict(tracking=...) in the config")
    p.add_argument("--serve", action="store_true", help=f"serve deployment antgo/{DEPLOYMENT_NAME}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.serve:
        serve_deployment()
        return 0
    try:  # fail before starting Prefect (a temporary server takes seconds): missing file, unreachable tracking
        config_path = resolve_config(args.config)
        if tracking_mode(args.tracking, config_path, args.cfg_options) == "required":
            check_tracking("required", resolve_tracking_uri(args.tracking_uri))
    except (FileNotFoundError, ValueError, TrackingUnavailableError) as exc:
        print(f"antgo pipeline Failed: {exc}", file=sys.stderr)
        return 1
    thresholds = None
    if args.parity:
        thresholds = {k: float(v) for k, v in (item.split("=", 1) for item in args.parity)}
    try:
        with script_server("antgo pipeline"):
            summary = antgo(config=args.config, cfg_options=args.cfg_options, work_dir=args.work_dir,
                            max_epochs=args.max_epochs, device=args.device, experiment=args.experiment,
                            tracking_uri=args.tracking_uri, parity_thresholds=thresholds,
                            parity_samples=args.parity_samples, num_vis=args.num_vis, alias=args.alias,
                            resume=args.resume, nproc_per_node=args.nproc_per_node, tracking=args.tracking)
    except Exception as exc:
        summary = getattr(exc, "antgo_summary", None)
        print(format_summary(summary) if summary else f"antgo pipeline Failed: {error_text(exc)}",
              file=sys.stderr)
        return 1
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
