"""The ``antgo-sweep`` Prefect flow: many trainings of one config with different overrides, compared in MLflow.

Script usage::

    python flows/sweep_flow.py CONFIG --grid optimizer.lr=0.01,0.05 model.decode_head.channels=16,32
    python flows/sweep_flow.py CONFIG --search space.json --trials 20 [--sampler tpe|random] [--no-prune]
        [--max-epochs N] [--concurrency K] [--work-dir D] [--experiment E] [--tracking-uri URI]
    python flows/sweep_flow.py --serve          # serve deployment antgo-sweep/sweep

Each trial is a ``trial`` task that runs the pipeline's parse_config + train + evaluate stages with its
overrides; at most ``concurrency`` trials run at once (threads of the flow's task runner). Optuna proposes the
overrides (grid, random or TPE) and prunes trials from the validation metric after each epoch; its study lives
in ``<sweep folder>/optuna.journal`` (or ``--study-storage``). MLflow: one parent run for the sweep, a nested
run per trial with its overrides as params, the stage runs nested below. The best trial alone is exported and
checked for ONNX parity and gets the alias. A failed trial is recorded (MLflow FAILED, Optuna FAIL) and the
sweep goes on. The summary table (trial, state, overrides, score) is a Prefect and an MLflow artifact.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import flows  # noqa: E402,F401  (telemetry/logging defaults before prefect is imported)

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from antgo.tracking.runs import PipelineTracker, TrackingContext, error_text  # noqa: E402
from flows import tasks  # noqa: E402
from flows.report import in_prefect_run, publish_mlflow_link  # noqa: E402
from flows.server import script_server  # noqa: E402
from flows.sweep_study import (OptunaPruningHook, SweepError, create_study, grid_size, load_space,  # noqa: E402,F401
                               parse_grid, suggest)
from flows.train_flow import DEFAULT_CONFIG, make_run_dir, resolve_config  # noqa: E402

logger = logging.getLogger("antgo.flows")

DEPLOYMENT_NAME = "sweep"


def objective(config_path: Path) -> tuple[str, str]:
    """The metric the sweep optimises and its direction, from ``evaluation.save_best`` / ``rule``."""
    from antgo.config import Config

    evaluation = Config.fromfile(str(config_path)).get("evaluation") or {}
    metric = evaluation.get("save_best")
    if not metric or metric == "auto":
        raise SweepError(f"{config_path}: a sweep needs evaluation.save_best='<metric>' (and rule='greater' or "
                         f"'less') to know what to optimise")
    return str(metric), "minimize" if evaluation.get("rule") == "less" else "maximize"


@task(name="trial", cache_policy=NO_CACHE)
def run_trial(number: int, trial_id: int, overrides: dict[str, Any], config: str, cfg_options: list[str] | None,
              sweep_dir: str, sweep_tracking: dict[str, Any], max_epochs: int | None, device: str | None,
              pruning: dict[str, Any] | None, loader_context: str | None = "fork") -> dict[str, Any]:
    """parse_config + train + evaluate of one trial in its own folder and nested MLflow run.

    Returns the trial's row (``state`` COMPLETE or PRUNED); a failure marks its MLflow run FAILED and raises.
    """
    import optuna

    sweep = PipelineTracker(TrackingContext.from_dict(sweep_tracking))
    name = f"trial-{number:03d}"
    run_id = sweep.start_child(name, tags={"antgo.trial": number, "antgo.kind": "trial"})
    sweep.log_params(run_id, {**overrides, "trial.number": number})
    track = TrackingContext(sweep.ctx.tracking_uri, sweep.ctx.experiment_id, run_id).to_dict()
    trial_dir = Path(sweep_dir) / name
    trial_dir.mkdir(parents=True, exist_ok=True)
    row: dict[str, Any] = {"trial": number, "overrides": overrides, "mlflow_run_id": run_id, "run_dir": str(trial_dir)}
    options = [*(cfg_options or []), *(f"{k}={v!r}" for k, v in overrides.items())]
    hooks = [{"type": "OptunaPruningHook", "trial_id": trial_id, **pruning}] if pruning else None
    try:
        parsed = tasks.parse_config(config, options, str(trial_dir), track, loader_context)
        trained = tasks.train(parsed["config_path"], str(trial_dir), track, max_epochs=max_epochs, device=device,
                              hooks=hooks)
        evaluated = tasks.evaluate(parsed["config_path"], str(trial_dir), trained["checkpoint"], track, num_vis=0,
                                   device=device)
    except optuna.TrialPruned as exc:
        sweep.set_tags(run_id, {"antgo.trial_state": "PRUNED", "pruned": str(exc)})
        sweep.end(run_id)
        return {**row, "state": "PRUNED", "score": None, "error": str(exc)}
    except BaseException as exc:
        sweep.set_tags(run_id, {"antgo.trial_state": "FAIL"})
        sweep.end(run_id, exc)
        raise
    row.update(state="COMPLETE", score=trained["best_score"], metric=trained["best_metric"],
               checkpoint=trained["checkpoint"], config_path=parsed["config_path"],
               registered_model_name=parsed["registered_model_name"], test_metrics=evaluated["metrics"],
               config_hash=parsed["config_hash"])
    sweep.log_metrics(run_id, {f"best/{trained['best_metric']}": trained["best_score"],
                               **{f"test/{k}": v for k, v in evaluated["metrics"].items()}})
    sweep.set_tags(run_id, {"antgo.trial_state": "COMPLETE"})
    sweep.end(run_id)
    return row


def _trial_plans(study: Any, grid: dict[str, list[Any]] | None, space: dict[str, Any] | None,
                 count: int) -> list[tuple[Any, dict[str, Any]]]:
    """Ask the study for ``count`` trials and their overrides."""
    plans = []
    for _ in range(count):
        trial = study.ask()
        if grid:
            overrides = {k: trial.suggest_categorical(k, v) for k, v in grid.items()}
        else:
            overrides = suggest(trial, space or {})
        plans.append((trial, overrides))
    return plans


@flow(name="antgo-sweep", description="antgo hyperparameter sweep: trials of train + evaluate, best one "
                                      "exported and verified", validate_parameters=True)
def antgo_sweep(config: str = DEFAULT_CONFIG, grid: dict[str, list[Any]] | None = None,
                search: str | None = None, trials: int | None = None, sampler: str = "tpe", prune: bool = True,
                seed: int = 0, max_epochs: int | None = None, concurrency: int = 2,
                cfg_options: list[str] | None = None, work_dir: str | None = None, experiment: str | None = None,
                tracking_uri: str | None = None, device: str | None = None, alias: str = "champion",
                parity_samples: int | None = None, study_storage: str | None = None,
                loader_context: str | None = "fork") -> dict[str, Any]:
    """Run the sweep; returns the summary (rows per trial, the best trial, its model version and alias).

    ``grid`` ({key: [values]}) runs every combination; otherwise ``search`` (a space file, see
    flows/sweep_study.py) with ``trials`` draws by ``sampler``.
    """
    config_path = resolve_config(config)
    if not grid and not search:
        raise SweepError("a sweep needs grid={key: [values]} (--grid) or search=SPACE_FILE (--search)")
    space = None if grid else load_space(search)
    trials = grid_size(grid) if grid and not trials else int(trials or 0)
    if trials < 1:
        raise SweepError("trials must be at least 1 (--trials N with --search)")
    metric, direction = objective(config_path)
    sweep_dir = make_run_dir(work_dir or str(Path("work_dirs") / f"{config_path.stem}-sweep"), config_path, None,
                             "sweep")
    storage = study_storage or str(sweep_dir / "optuna.journal")
    study = create_study(storage, sweep_dir.name, direction, sampler, seed, prune, grid)
    tracker = PipelineTracker.start(experiment or f"{config_path.stem}-sweep", run_name=sweep_dir.name,
                                    tracking_uri=tracking_uri, tags={
                                        "antgo.pipeline": "false", "antgo.kind": "sweep",
                                        "antgo.config": str(config_path), "antgo.run_dir": str(sweep_dir)})
    tracker.log_params(tracker.parent_run_id, {
        "sweep.config": str(config_path), "sweep.grid": grid, "sweep.search": search, "sweep.trials": trials,
        "sweep.sampler": "grid" if grid else sampler, "sweep.prune": prune, "sweep.metric": metric,
        "sweep.direction": direction, "sweep.concurrency": concurrency, "sweep.max_epochs": max_epochs,
        "sweep.cfg_options": cfg_options or []})
    publish_mlflow_link(tracker.url(), tracker.parent_run_id)
    pruning = {"storage": storage, "study_name": study.study_name, "metric": metric} if prune else None
    summary: dict[str, Any] = {"status": "Running", "sweep_dir": str(sweep_dir), "metric": metric,
                               "direction": direction, "mlflow_run_id": tracker.parent_run_id,
                               "experiment_id": tracker.ctx.experiment_id, "tracking_uri": tracker.ctx.tracking_uri,
                               "study": study.study_name, "study_storage": storage}
    try:
        rows = _run_trials(study, grid, space, trials, max(1, int(concurrency)), str(config_path), cfg_options,
                           sweep_dir, tracker, max_epochs, device, pruning, loader_context)
        summary["trials"] = rows
        summary.update(_finish_best(study, rows, tracker, alias, parity_samples))
    except BaseException as exc:
        summary.update(status="Failed", error=error_text(exc))
        _publish(tracker, summary, exc)
        raise
    summary["status"] = "Completed"
    _publish(tracker, summary, None)
    return summary


def _run_trials(study: Any, grid: dict[str, list[Any]] | None, space: dict[str, Any] | None, trials: int,
                concurrency: int, config: str, cfg_options: list[str] | None, sweep_dir: Path,
                tracker: PipelineTracker, max_epochs: int | None, device: str | None,
                pruning: dict[str, Any] | None, loader_context: str | None) -> list[dict[str, Any]]:
    """Trials in waves of ``concurrency``; each result is told to the study before the next wave is asked."""
    import optuna

    rows: list[dict[str, Any]] = []
    track = tracker.ctx.to_dict()
    while len(rows) < trials:
        plans = _trial_plans(study, grid, space, min(concurrency, trials - len(rows)))
        futures = [run_trial.submit(t.number, t._trial_id, overrides, config, cfg_options, str(sweep_dir), track,
                                    max_epochs, device, pruning, loader_context) for t, overrides in plans]
        for (trial, overrides), future in zip(plans, futures):
            outcome = future.result(raise_on_failure=False)
            if isinstance(outcome, BaseException):
                logger.error("trial %d failed: %s", trial.number, error_text(outcome))
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                rows.append({"trial": trial.number, "overrides": overrides, "state": "FAIL", "score": None,
                             "error": error_text(outcome)})
            elif outcome["state"] == "PRUNED":
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                rows.append(outcome)
            else:
                study.tell(trial, float(outcome["score"]))
                rows.append(outcome)
            logger.info("trial %d %s: %s score=%s", trial.number, rows[-1]["state"], overrides, rows[-1]["score"])
    return rows


def _finish_best(study: Any, rows: list[dict[str, Any]], tracker: PipelineTracker, alias: str,
                 parity_samples: int | None) -> dict[str, Any]:
    """Export + parity of the best completed trial (stage runs nested under its trial run); alias on pass."""
    done = [r for r in rows if r["state"] == "COMPLETE"]
    if not done:
        raise RuntimeError(f"no trial of the sweep completed ({len(rows)} ran): see the trials' errors")
    best = next(r for r in done if r["trial"] == study.best_trial.number)
    track = TrackingContext(tracker.ctx.tracking_uri, tracker.ctx.experiment_id, best["mlflow_run_id"]).to_dict()
    exported = tasks.export(best["config_path"], best["run_dir"], best["checkpoint"], track,
                            best["registered_model_name"])
    verified = tasks.verify(best["config_path"], best["run_dir"], exported["onnx_path"], best["checkpoint"], track,
                            model_name=exported.get("name"), model_version=exported.get("version"), alias=alias,
                            num_samples=parity_samples, test_metrics=best["test_metrics"],
                            config_hash=best["config_hash"], score_metric=best["metric"])
    tracker.set_tags(tracker.parent_run_id, {"antgo.best_trial": best["trial"],
                                             "antgo.best_trial_run_id": best["mlflow_run_id"]})
    tracker.log_metrics(tracker.parent_run_id, {f"best/{best['metric']}": best["score"]})
    return {"best_trial": best["trial"], "best_score": best["score"], "best_overrides": best["overrides"],
            "onnx_path": exported["onnx_path"], "model": {k: exported.get(k) for k in ("name", "version")},
            "alias_set": verified["alias"]}


def summary_table(rows: list[dict[str, Any]], best: int | None) -> list[dict[str, Any]]:
    """One row per trial for the Prefect table and the MLflow artifact."""
    def fmt(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))

    return [{"trial": r["trial"], "state": r["state"] + (" (best)" if r["trial"] == best else ""),
             "overrides": " ".join(f"{k}={v}" for k, v in r["overrides"].items()), "score": fmt(r.get("score")),
             "error": (r.get("error") or "")[:200]} for r in rows]


def _publish(tracker: PipelineTracker, summary: dict[str, Any], exc: BaseException | None) -> None:
    """summary.json + the table as MLflow artifacts of the sweep run, a Prefect table artifact; close the run."""
    table = summary_table(summary.get("trials") or [], summary.get("best_trial"))
    summary["table"] = table
    try:
        Path(summary["sweep_dir"], "sweep_summary.json").write_text(json.dumps(summary, indent=2, default=str))
        tracker.log_artifact(tracker.parent_run_id, Path(summary["sweep_dir"]) / "sweep_summary.json")
        tracker.log_dict(tracker.parent_run_id, table, "sweep/trials.json")
    except Exception:
        logger.exception("could not log the sweep summary")
    if in_prefect_run():
        from prefect.artifacts import create_table_artifact

        try:
            create_table_artifact(table, key="sweep-trials", description=f"antgo sweep {summary['status']}: "
                                  f"{summary['metric']} ({summary['direction']}), best trial "
                                  f"{summary.get('best_trial')}")
        except Exception:
            logger.exception("could not create the sweep table artifact")
    try:
        tracker.end(tracker.parent_run_id, exc)
    except Exception:
        logger.exception("could not close the MLflow sweep run")


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"antgo sweep {summary.get('status')}: {summary.get('metric')} ({summary.get('direction')})"]
    for row in summary.get("table") or []:
        lines.append(f"  trial {row['trial']:>3} {row['state']:<16} {row['score']:>8}  {row['overrides']}"
                     + (f"  [{row['error']}]" if row["error"] else ""))
    if summary.get("model", {}).get("version"):
        lines.append(f"  best trial {summary['best_trial']}: {summary['model']['name']} v{summary['model']['version']}"
                     + (f" (alias @{summary['alias_set']})" if summary.get("alias_set") else ""))
    if summary.get("error"):
        lines.append(f"  error: {summary['error']}")
    lines.append(f"  sweep folder: {summary.get('sweep_dir')}")
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Run an antgo hyperparameter sweep as a Prefect flow.")
    p.add_argument("config", nargs="?", default=DEFAULT_CONFIG)
    way = p.add_mutually_exclusive_group()
    way.add_argument("--grid", nargs="+", metavar="KEY=V1,V2", help="every combination of these values")
    way.add_argument("--search", metavar="SPACE_FILE", help="JSON/YAML search space (see flows/sweep_study.py)")
    p.add_argument("--trials", type=int, default=None, help="trials to draw with --search (grid: all)")
    p.add_argument("--sampler", choices=("tpe", "random"), default="tpe")
    p.add_argument("--no-prune", action="store_true", help="never stop a trial early")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-epochs", type=int, default=None)
    p.add_argument("--concurrency", type=int, default=2, help="trials running at once")
    p.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE", help="overrides of every trial")
    p.add_argument("--work-dir", default=None, help="parent of the sweep folder (default work_dirs/<stem>-sweep)")
    p.add_argument("--experiment", default=None)
    p.add_argument("--tracking-uri", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--alias", default="champion")
    p.add_argument("--study-storage", default=None, help="Optuna storage URL or .journal file")
    p.add_argument("--serve", action="store_true", help=f"serve deployment antgo-sweep/{DEPLOYMENT_NAME}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.serve:
        antgo_sweep.serve(name=DEPLOYMENT_NAME, tags=["antgo"], description="antgo hyperparameter sweep")
        return 0
    try:
        grid = parse_grid(args.grid) if args.grid else None
        with script_server("antgo sweep"):
            summary = antgo_sweep(config=args.config, grid=grid, search=args.search, trials=args.trials,
                                  sampler=args.sampler, prune=not args.no_prune, seed=args.seed,
                                  max_epochs=args.max_epochs, concurrency=args.concurrency,
                                  cfg_options=args.cfg_options, work_dir=args.work_dir, experiment=args.experiment,
                                  tracking_uri=args.tracking_uri, device=args.device, alias=args.alias,
                                  study_storage=args.study_storage)
    except Exception as exc:
        print(f"antgo sweep Failed: {error_text(exc)}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
