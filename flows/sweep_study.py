"""The Optuna side of a sweep: the search space, the study (storage beside the sweep's folder) and the
pruning hook that reports the validation metric to a trial after each validation.

A search-space file is JSON or YAML, one entry per dotted config key::

    {"optimizer.lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": true},
     "data.train_dataloader.samples_per_gpu": {"type": "int", "low": 4, "high": 16, "step": 4},
     "model.decode_head.channels": {"type": "categorical", "choices": [16, 32]}}
"""
from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import Any

from antgo.engine.hooks import Hook
from antgo.registry import HOOKS

logger = logging.getLogger("antgo.flows")

SPACE_TYPES = ("float", "int", "categorical")


class SweepError(ValueError):
    """A sweep that cannot start as asked (bad grid, space file, sampler); the message names the fix."""


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``['optimizer.lr=0.01,0.1', 'model.x=a,b']`` -> ``{'optimizer.lr': [0.01, 0.1], 'model.x': ['a', 'b']}``."""
    from antgo.config.overrides import parse_value

    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        choices = [parse_value(v.strip()) for v in values.split(",") if v.strip()]
        if not sep or not key.strip() or not choices:
            raise SweepError(f"--grid entry {item!r} must look like KEY=V1,V2 (e.g. optimizer.lr=0.01,0.1)")
        grid[key.strip()] = choices
    return grid


def grid_size(grid: dict[str, list[Any]]) -> int:
    return len(list(itertools.product(*grid.values()))) if grid else 0


def load_space(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read and check a search-space file (JSON, or YAML by extension)."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"search space file {path} not found")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        space = yaml.safe_load(text)
    else:
        space = json.loads(text)
    if not isinstance(space, dict) or not space:
        raise SweepError(f"{path}: expected a mapping of config keys to parameter specs")
    for key, spec in space.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind not in SPACE_TYPES:
            raise SweepError(f"{path}: '{key}' needs type one of {SPACE_TYPES}, got {spec!r}")
        needed = ("choices",) if kind == "categorical" else ("low", "high")
        missing = [n for n in needed if n not in spec]
        if missing:
            raise SweepError(f"{path}: '{key}' ({kind}) is missing {', '.join(missing)}")
    return space


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The overrides of one trial, drawn by the study's sampler."""
    values: dict[str, Any] = {}
    for key, spec in space.items():
        kind = spec["type"]
        if kind == "categorical":
            values[key] = trial.suggest_categorical(key, list(spec["choices"]))
        elif kind == "int":
            values[key] = trial.suggest_int(key, int(spec["low"]), int(spec["high"]), step=int(spec.get("step", 1)),
                                            log=bool(spec.get("log", False)))
        else:
            values[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]),
                                              step=spec.get("step"), log=bool(spec.get("log", False)))
    return values


def open_storage(spec: str) -> Any:
    """A study storage: a ``*.journal`` file (safe for concurrent trials without a server) or a database URL
    (``sqlite:///...``, ``postgresql+psycopg2://user@host/db`` with the password in ``PGPASSWORD``)."""
    import optuna

    if "://" in spec:
        return optuna.storages.RDBStorage(spec)
    from optuna.storages.journal import JournalFileBackend

    Path(spec).parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(spec)))


def make_pruner() -> Any:
    """Median pruning once two trials completed, from the second epoch on (Optuna does not store the pruner
    with the study: the pruning hook builds the same one)."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)  # steps are epochs from 1


def create_study(storage: str, name: str, direction: str, sampler: str, seed: int, prune: bool,
                 grid: dict[str, list[Any]] | None) -> Any:
    """The sweep's study: grid, random or TPE sampling; median pruning from the second epoch on.

    A grid is enqueued combination by combination (Optuna's GridSampler stops the study from inside ``tell``,
    which the ask-and-tell loop of a flow does not allow)."""
    import optuna

    if grid or sampler == "random":
        chosen = optuna.samplers.RandomSampler(seed=seed)
    elif sampler == "tpe":
        chosen = optuna.samplers.TPESampler(seed=seed)
    else:
        raise SweepError(f"sampler {sampler!r} unknown; use 'tpe' or 'random' (or --grid)")
    pruner = make_pruner() if prune else optuna.pruners.NopPruner()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=open_storage(storage), study_name=name, direction=direction,
                                sampler=chosen, pruner=pruner, load_if_exists=True)
    for values in itertools.product(*grid.values()) if grid else ():
        study.enqueue_trial(dict(zip(grid, values)), skip_if_exists=True)
    return study


@HOOKS.register_module()
class OptunaPruningHook(Hook):
    """Reports ``metric`` after each validation to trial ``trial_id`` and stops a trial the pruner rejects.

    Built from a plain dict (``type='OptunaPruningHook', storage=..., study_name=..., trial_id=...,
    metric='miou'``) so that it can travel to a ``torchrun`` subprocess; only rank 0 reports.
    """

    priority = 85  # after the evaluation hook has filled the metrics

    def __init__(self, storage: str, study_name: str, trial_id: int, metric: str) -> None:
        self.storage, self.study_name, self.trial_id, self.metric = storage, study_name, int(trial_id), metric
        self._trial = None

    def _get_trial(self) -> Any:
        if self._trial is None:
            import optuna

            study = optuna.load_study(study_name=self.study_name, storage=open_storage(self.storage),
                                      pruner=make_pruner())
            self._trial = optuna.trial.Trial(study, self.trial_id)
        return self._trial

    def after_val(self, trainer: Any, metrics: dict[str, Any]) -> None:
        if getattr(trainer, "rank", 0) != 0 or self.metric not in (metrics or {}):
            return
        import optuna

        trial = self._get_trial()
        trial.report(float(metrics[self.metric]), step=int(trainer.epoch) + 1)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {trainer.epoch + 1}: {self.metric}="
                                     f"{float(metrics[self.metric]):.4f}")
