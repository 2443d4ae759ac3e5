"""One Prefect task per pipeline stage, each a thin call into antgo.

Tasks pass paths and small dicts, never models or loaders, and use ``NO_CACHE``: Prefect would otherwise hash
every input for a cache key. Each task opens its own MLflow child run under the pipeline's parent run
(``tracking`` = ``TrackingContext.to_dict()``); a failure marks that run FAILED with the error and re-raises.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from antgo.tracking.runs import PipelineTracker, TrackingContext, file_sha256, is_number

logger = logging.getLogger("antgo.flows")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG_DIR = PROJECT_ROOT / "configs" / "demo"
LOADER_KEYS = ("train_dataloader", "val_dataloader", "test_dataloader")
SPLITS = ("train", "val", "test")


def _tracker(tracking: dict[str, Any]) -> PipelineTracker:
    return PipelineTracker(TrackingContext.from_dict(tracking))


def _load(config_path: str) -> Any:
    from antgo.config import load_config

    return load_config(config_path)


def set_loader_context(cfg: Any, context: str | None) -> None:
    """Give DataLoader workers ``multiprocessing_context`` unless the config sets one.

    ``serve()`` starts flow runs with spawn, so workers would re-import the flow module every epoch (seconds
    each); fork avoids that on Linux.
    """
    if not context:
        return
    data = cfg.get("data") or {}
    for key in LOADER_KEYS:
        loader = data.get(key)
        if isinstance(loader, dict) and int(loader.get("workers_per_gpu", 0) or 0) > 0 \
                and loader.get("multiprocessing_context") is None:
            cfg.merge_from_dict({f"data.{key}.multiprocessing_context": context}, allow_new=True)


def ensure_demo_data(cfg: Any, config_path: str | os.PathLike) -> list[str]:
    """Generate the embedded demo data set where a demo config's data folder is missing or incomplete."""
    path = Path(config_path).resolve()
    if DEMO_CONFIG_DIR not in path.parents:
        return []
    from antgo.data.datasets.demo import MANIFEST
    from antgo.data.datasets.synthetic_tasks import make_demo

    made = []
    for split in SPLITS:
        split_cfg = (cfg.get("data") or {}).get(split) or {}
        folder = split_cfg.get("dir")
        if folder and not (Path(folder) / MANIFEST).exists() and str(folder) not in made:
            logger.info("demo data missing in %s: generating it", folder)
            make_demo(demo_task(split_cfg), folder)
            made.append(str(folder))
    return made


def demo_task(split_cfg: Any) -> str:
    """The embedded demo a split reads, from its reader: ImageFolder → cls, COCO2017 → det or kp, else seg."""
    task_type = str((split_cfg.get("ext_params") or {}).get("task_type", "")).upper()
    return {"ImageFolder": "cls", "COCO2017": "kp" if task_type == "KEYPOINTS" else "det"}.get(split_cfg.get("type"),
                                                                                               "seg")


@task(name="parse_config", cache_policy=NO_CACHE)
def parse_config(config: str, cfg_options: list[str] | None, run_dir: str, tracking: dict[str, Any],
                 loader_context: str | None = "fork") -> dict[str, Any]:
    """Load and override the config, dump the resolved file into ``run_dir`` and log it (params + file)."""
    from antgo.config import load_config

    tracker = _tracker(tracking)
    with tracker.stage("parse_config") as run:
        cfg = load_config(config, cfg_options=cfg_options or None)
        set_loader_context(cfg, loader_context)
        generated = ensure_demo_data(cfg, config)
        dumped = cfg.dump(str(Path(run_dir) / "config.py"))
        cfg_hash = file_sha256(dumped)
        from antgo.config.secrets import mask_secrets

        # the hyperparameters go on the parent run: the runs table and Compare page work per pipeline
        tracker.log_params(tracker.parent_run_id, mask_secrets(cfg.flatten()))
        run.log_artifact(dumped, "config")
        run.set_tags({"antgo.config_hash": cfg_hash})
        tracker.set_tags(tracker.parent_run_id, {"antgo.config_hash": cfg_hash})
        mlflow_cfg = cfg.get("mlflow") or {}
        out = {
            "config_path": dumped,
            "config_hash": cfg_hash,
            "registered_model_name": mlflow_cfg.get("registered_model_name") or Path(config).stem,
            "max_epochs": cfg.get("max_epochs"),
            "generated_data": generated,
        }
    logger.info("config %s -> %s (sha256 %s)", config, dumped, cfg_hash[:12])
    return out


def _split_cfg(cfg: Any, split: str) -> Any:
    return (cfg.get("data") or {}).get(split)


@task(name="build_dataloaders", cache_policy=NO_CACHE)
def build_dataloaders(config_path: str, run_dir: str, tracking: dict[str, Any],
                      histogram_max_samples: int | None = 2000) -> dict[str, Any]:
    """Build every split's reader and loader once (fails fast on data errors); log sizes and class histogram."""
    from antgo.data.builder import build_dataloader, build_dataset
    from antgo.tracking.plots import class_pixel_histogram

    tracker = _tracker(tracking)
    with tracker.stage("build_dataloaders") as run:
        cfg = _load(config_path)
        sizes: dict[str, int] = {}
        readers: dict[str, Any] = {}
        for split in SPLITS:
            split_cfg = _split_cfg(cfg, split)
            if split_cfg is None:
                continue
            readers[split] = build_dataset(split_cfg, key_path=f"data.{split}")
            sizes[split] = len(readers[split])
            # one loader per split, in the main process: proves loader settings and collate on a real batch
            loader_cfg = dict((cfg.get("data") or {}).get(f"{split}_dataloader") or {})
            loader_cfg.update(workers_per_gpu=0, shuffle=False)
            loader_cfg.pop("multiprocessing_context", None)
            if sizes[split]:
                next(iter(build_dataloader(readers[split], **loader_cfg)))
        if not sizes.get("train"):
            raise ValueError(f"data.train in {config_path} has no samples; check data.train.dir")
        run.log_metrics({f"samples/{k}": v for k, v in sizes.items()})
        from antgo.tracking.inputs import log_datasets

        tracker.guarded(tracker.parent_run_id, "log_inputs (datasets)",  # skipped while MLflow is unreachable
                        lambda: log_datasets(tracker.client, tracker.parent_run_id, readers, cfg.get("data")))
        train_set = readers["train"].dataset
        if train_set.sample(0).get("segments") is None:  # boxes, keypoints, image labels: no masks to count
            names = getattr(train_set, "class_names", None)
            return {"sizes": sizes, "num_classes": len(names) if names else _num_classes(cfg)}
        hist = class_pixel_histogram(train_set, _num_classes(cfg), max_samples=histogram_max_samples)
        hist["class_names"] = _class_names(train_set, len(hist["counts"]))
        run.log_dict(hist, "data/class_pixel_histogram.json")
        run.log_metrics({f"class_fraction/{name}": frac for name, frac in zip(hist["class_names"], hist["fractions"])})
        Path(run_dir, "class_pixel_histogram.json").write_text(json.dumps(hist, indent=2))
    return {"sizes": sizes, "num_classes": len(hist["counts"])}


def _num_classes(cfg: Any) -> int | None:
    metric = (cfg.get("evaluation") or {}).get("metric") or {}
    if isinstance(metric, dict) and metric.get("class_num"):
        return int(metric["class_num"])
    head = ((cfg.get("model") or {}).get("decode_head") or {})
    return int(head["out_channels"]) if head.get("out_channels") else None


def _class_names(dataset: Any, n: int) -> list[str]:
    names = getattr(dataset, "class_names", None) or getattr(dataset, "CLASSES", None)
    names = list(names) if names else []
    return [str(names[i]) if i < len(names) else str(i) for i in range(n)]


def _resume_checkpoint(run_dir: str, cfg: Any = None) -> str | None:
    """``latest.pth`` of a run folder, found by the CLI's rule (``checkpoint_config.out_dir``, then the folder)."""
    from antgo.engine.loading import find_checkpoint

    try:
        return find_checkpoint(run_dir, cfg, names=("latest.pth",), use_config=False)
    except FileNotFoundError:
        return None


def can_resume(run_dir: str, config_path: str | None) -> bool:
    """True when the run folder has a ``latest.pth`` that ``--resume`` would continue from."""
    try:
        cfg = _load(config_path) if config_path else None
    except Exception:  # the folder's config no longer loads: look where the defaults put checkpoints
        cfg = None
    return _resume_checkpoint(run_dir, cfg) is not None


@task(name="train", cache_policy=NO_CACHE)
def train(config_path: str, run_dir: str, tracking: dict[str, Any], max_epochs: int | None = None,
          device: str | None = None, resume: bool = False, flush_every: int = 50,
          hooks: list[dict[str, Any]] | None = None, launch: dict[str, Any] | None = None) -> dict[str, Any]:
    """``Trainer.start_train`` with MLflow (batched per-iteration metrics) and Prefect progress hooks.

    ``hooks``: extra hook configs (``dict(type=...)``, e.g. a sweep's pruning hook). ``launch``: torchrun
    options (``nproc_per_node``, ``nnodes``, ...; see ``flows.launch``) over the config's ``dist_params``;
    more than one process runs training under ``torchrun`` in a subprocess.
    """
    from antgo.tracking.plots import log_history_plots
    from antgo.tracking.system import system_metrics

    from flows.launch import launch_options, needs_torchrun, train_with_torchrun

    tracker = _tracker(tracking)
    with tracker.stage("train") as run:
        cfg = _load(config_path)
        launch = launch_options(cfg.get("dist_params"), launch)
        resume_from = _resume_checkpoint(run_dir, cfg) if resume else None
        if resume_from:
            logger.info("resuming from %s", resume_from)
        try:
            with system_metrics(tracker, tracker.parent_run_id):
                if needs_torchrun(launch):
                    result = train_with_torchrun(config_path, run_dir, tracking, run.run_id, launch,
                                                 max_epochs=max_epochs, device=device, resume_from=resume_from,
                                                 flush_every=flush_every, hooks=hooks)
                else:
                    result = run_trainer(config_path, run_dir, tracker, run.run_id, max_epochs=max_epochs,
                                         device=device, resume_from=resume_from, flush_every=flush_every, hooks=hooks)
        except BaseException:
            _log_train_files(run, run_dir, None, failing=True)  # the log says why: keep it with the FAILED run
            raise
        best = result.get("best_checkpoint") or result.get("latest_checkpoint")
        if not best or not Path(best).is_file():
            raise FileNotFoundError(f"training in {run_dir} produced no checkpoint (result: {result})")
        summary = {k: result.get(k) for k in ("best_checkpoint", "latest_checkpoint", "best_score",
                                              "best_metric", "epochs", "iters")}
        summary["checkpoint"] = str(best)
        run.log_metrics({"epochs": summary["epochs"], "iters": summary["iters"]}, step=int(result.get("iters") or 0))
        if summary["best_score"] is not None:
            best_metric = {f"best/{summary['best_metric'] or 'score'}": summary["best_score"]}
            run.log_metrics(best_metric)
            tracker.log_metrics(tracker.parent_run_id, {**best_metric, "epochs": result.get("epochs_run") or 0})
        run.log_artifact(best, "checkpoints")
        if result.get("best_weights"):
            run.log_artifact(result["best_weights"], "checkpoints")
        log_history_plots(run, run_dir, result.get("history") or [])
        _log_train_files(run, run_dir, result.get("best_checkpoint"))
        if result.get("history") is not None:
            run.log_dict(result["history"], "train/history.json")
        run.set_tags({"mlflow_log_batch_calls": result.get("mlflow_log_batch_calls")})
    return summary


def run_trainer(config_path: str, run_dir: str, tracker: PipelineTracker, train_run_id: str | None,
                max_epochs: int | None = None, device: str | None = None, resume_from: str | None = None,
                flush_every: int = 50, hooks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Build the Trainer with the MLflow, Prefect-progress and extra hooks and train (this process; under
    torchrun each rank calls it and only rank 0's tracker logs)."""
    from antgo.engine import Trainer
    from antgo.engine.hooks.builder import build_hook
    from antgo.tracking.hooks import MlflowLoggerHook

    from flows.report import PrefectProgressHook

    trainer = Trainer(config_path, work_dir=run_dir, device=device)
    trainer.config_dataloader(with_validate=True)
    trainer.config_model(resume_from=resume_from)
    mlflow_hook = MlflowLoggerHook(tracker, train_run_id, flush_every=flush_every)
    trainer.register_hook(mlflow_hook)
    trainer.register_hook(PrefectProgressHook())
    for i, hook_cfg in enumerate(hooks or []):
        trainer.register_hook(build_hook(hook_cfg, f"train hooks[{i}]"))
    result = dict(trainer.start_train(max_epochs=max_epochs))
    result["mlflow_log_batch_calls"] = mlflow_hook.flushes
    return result


def _log_train_files(run: Any, run_dir: str, best_checkpoint: str | None, failing: bool = False) -> None:
    """``train.log`` (in ``run_dir``) and ``best.json`` (beside ``best.pth``, i.e. in ``evaluation.out_dir``).

    ``failing``: called while a training error propagates; an upload error is then logged, not raised, so that
    it cannot replace the training error.
    """
    files = [Path(run_dir) / "train.log"]
    if best_checkpoint:
        files.append(Path(best_checkpoint).parent / "best.json")
    for path in files:
        if not path.is_file():
            continue
        try:
            run.log_artifact(path, "train")
        except Exception:
            if not failing:
                raise
            logger.exception("could not log %s to the failed train run", path)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(config_path: str, run_dir: str, checkpoint: str, tracking: dict[str, Any], num_vis: int = 4,
             device: str | None = None) -> dict[str, Any]:
    """``Tester.evaluate`` of ``checkpoint`` on the test split; logs metrics, confusion matrix, per-class bars
    and ``num_vis`` prediction overlays (image | ground truth | prediction, with a colour legend)."""
    from antgo.engine import Tester
    from antgo.tracking.plots import find_confusion_matrix, log_per_class_plot, plot_confusion_matrix
    from antgo.tracking.task_plots import task_plots

    tracker = _tracker(tracking)
    with tracker.stage("evaluate") as run:
        out_dir = Path(run_dir) / "test"
        tester = Tester(config_path, run_dir, **({"device": device} if device else {}))
        tester.config_model(checkpoint=checkpoint)
        metrics = tester.evaluate(json_file=str(out_dir / "metrics.json"))
        metrics = {k: float(v) for k, v in (metrics or {}).items() if is_number(v)}
        run.log_metrics({f"test/{k}": v for k, v in metrics.items()})
        tracker.log_metrics(tracker.parent_run_id, {f"test/{k}": v for k, v in metrics.items()})
        cm = find_confusion_matrix(getattr(tester, "metrics", None))
        plots: list[str] = []
        if cm is not None:
            names = _class_names(getattr(getattr(tester, "reader", None), "dataset", None), cm.shape[0])
            plots.append(str(plot_confusion_matrix(cm, out_dir / "confusion_matrix.png", names)))
            run.log_artifact(plots[-1], "plots")
            run.log_dict({"confusion_matrix": cm.tolist(), "class_names": names}, "plots/confusion_matrix.json")
        plots += log_per_class_plot(run, metrics, out_dir)
        vis_files = _overlays(config_path, checkpoint, tester, num_vis, out_dir / "vis", device)
        for path, folder in task_plots(tester, out_dir, num_vis):  # PR curves, box / keypoint overlays
            if folder == "plots":
                run.log_artifact(path, folder)
                plots.append(path)
            else:
                vis_files.append(path)
        for f in vis_files:
            run.log_artifact(f, "predictions")
        if (out_dir / "metrics.json").is_file():
            run.log_artifact(out_dir / "metrics.json", "metrics")
    return {"metrics": metrics, "plots": plots, "vis_files": vis_files}


def _overlays(config_path: str, checkpoint: str, tester: Any, num_vis: int, vis_dir: Path,
              device: str | None) -> list[str]:
    """The first ``num_vis`` test samples through the same predictor as ``antgo predict`` (mask overlays; none for
    other tasks). Overlays are extras: a model they cannot handle is logged, and the stage goes on without them."""
    if num_vis <= 0 or getattr(tester, "reader", None) is None:
        return []
    from antgo.predict.runner import CheckpointModel, overlay_samples

    try:
        model = CheckpointModel(config_path, checkpoint, device=device)
        return overlay_samples(model, tester.reader.dataset, num_vis, vis_dir)
    except Exception:
        logger.exception("prediction overlays of %s failed; the evaluate stage goes on without them", checkpoint)
        return []


@task(name="export", cache_policy=NO_CACHE)
def export(config_path: str, run_dir: str, checkpoint: str, tracking: dict[str, Any],
           registered_model_name: str | None) -> dict[str, Any]:
    """``Exporter.export`` to ONNX; log the file and an MLflow ONNX model, register a version."""
    from antgo.engine import Exporter
    from antgo.tracking.registry import RegisteredOnnx, log_onnx_model

    tracker = _tracker(tracking)
    with tracker.stage("export") as run:
        name = registered_model_name or "model"
        onnx_path = str(Exporter(config_path, run_dir).export(checkpoint=checkpoint,
                                                               path=str(Path(run_dir) / f"{name}.onnx")))
        run.log_artifact(onnx_path, "onnx")
        if (Path(run_dir) / "export.json").is_file():
            run.log_artifact(Path(run_dir) / "export.json", "onnx")
        data_file = Path(onnx_path + ".data")
        if data_file.is_file():
            run.log_artifact(data_file, "onnx")
        registered = tracker.guarded(  # None while MLflow is unreachable: the ONNX file is in the run folder
            run.run_id, f"log ONNX model {onnx_path}",
            lambda: log_onnx_model(tracker, run.run_id, onnx_path, registered_model_name)) \
            or RegisteredOnnx(None, registered_model_name, None)
        run.set_tags({"antgo.model_name": registered.name, "antgo.model_version": registered.version})
    return {"onnx_path": onnx_path, **registered.to_dict()}


@task(name="verify", cache_policy=NO_CACHE)
def verify(config_path: str, run_dir: str, onnx_path: str, checkpoint: str, tracking: dict[str, Any],
           model_name: str | None = None, model_version: str | None = None, alias: str | None = "champion",
           thresholds: dict[str, float] | None = None, num_samples: int | None = None,
           test_metrics: dict[str, float] | None = None, config_hash: str | None = None,
           score_metric: str | None = None) -> dict[str, Any]:
    """onnxruntime vs torch parity; log the report; tag the version with its test metrics and parity numbers;
    ``alias`` goes to the best verified version by ``score_metric`` (the config's save_best and rule)."""
    from antgo.engine import ParityError, verify_parity
    from antgo.tracking.registry import choose_champion, set_version_alias, tag_version, version_tags

    tracker = _tracker(tracking)
    rule = _score_rule(config_path, score_metric)
    with tracker.stage("verify") as run:
        try:
            report = verify_parity(config_path, onnx_path, checkpoint, work_dir=run_dir,
                                   num_samples=num_samples, thresholds=thresholds)
            passed = True
        except ParityError as exc:
            report, passed = dict(getattr(exc, "report", None) or {}), False
            try:  # recording the failure must not replace it
                _log_parity(tracker, run, report, passed)
                tag_version(tracker, model_name, model_version, {"parity": "failed"})
            except Exception:
                logger.exception("could not record the parity failure in MLflow")
            raise
        report = dict(report or {})
        _log_parity(tracker, run, report, passed)
        tags = version_tags(test_metrics or {}, parity_numbers(report), config_hash, score_metric, rule)

        def register() -> str | None:
            tag_version(tracker, model_name, model_version, {**tags, "parity": "passed"})
            champion = None
            if alias and model_name and model_version:
                champion = choose_champion(tracker, model_name, score_metric, rule, alias) if score_metric else None
                if champion is None:  # nothing to rank by: the verified version takes the alias
                    set_version_alias(tracker, model_name, model_version, alias)
                    champion = model_version
            return champion

        # None while MLflow is unreachable: the verdict is in the run folder, the registry is left as it was
        champion = tracker.guarded(run.run_id, f"tag {model_name} v{model_version}, choose @{alias}", register)
    return {"report": report, "passed": passed, "champion": champion,
            "alias": alias if model_version and champion == model_version else None}


def _score_rule(config_path: str, metric: str | None) -> str:
    """``evaluation.rule``, else what the metric's name says (as the evaluation hook decides)."""
    from antgo.engine.hooks.eval import infer_rule

    rule = (_load(config_path).get("evaluation") or {}).get("rule")
    if rule or not metric:
        return rule or "greater"
    try:
        return infer_rule(metric)
    except ValueError:
        return "greater"


def parity_numbers(report: dict[str, Any]) -> dict[str, float]:
    """Numeric leaves of the parity report (``outputs.heatmap.max_abs_diff``, ``metrics.max_diff``, ...)."""
    from antgo.tracking.runs import flatten

    skip = ("thresholds.", "batch_sizes", "shape", "metrics.torch.", "metrics.onnxruntime.")
    numbers = {}
    for key, value in flatten(report).items():
        if any(key.startswith(s) or s in key for s in skip):
            continue
        if isinstance(value, bool) or is_number(value):
            numbers[key] = float(value)
    return numbers


def _log_parity(tracker: PipelineTracker, run: Any, report: dict[str, Any], passed: bool) -> None:
    report.setdefault("passed", passed)
    run.log_dict(report, "parity/parity.json")
    numbers = {f"parity/{k}": v for k, v in parity_numbers(report).items()}
    run.log_metrics(numbers)
    tracker.log_metrics(tracker.parent_run_id, numbers)
    verdict = "passed" if passed else "failed"
    run.set_tags({"parity": verdict})
    tracker.set_tags(tracker.parent_run_id, {"parity": verdict})
    if not passed:
        run.set_tags({"parity_failures": "; ".join(map(str, report.get("failures") or []))})
