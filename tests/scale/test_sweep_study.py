"""The Optuna pieces of a sweep without servers: grid and space parsing with clear errors, the pruning hook
stopping a trial whose validation metric trails the completed ones."""
from __future__ import annotations

import json
from types import SimpleNamespace

import optuna
import pytest

from flows.sweep_study import OptunaPruningHook, SweepError, create_study, load_space, parse_grid, suggest


def test_grid_values_are_literals_and_bad_entries_name_the_fix():
    assert parse_grid(["optimizer.lr=0.01,0.1", "model.name=a,b"]) == {"optimizer.lr": [0.01, 0.1],
                                                                        "model.name": ["a", "b"]}
    with pytest.raises(SweepError, match="KEY=V1,V2"):
        parse_grid(["optimizer.lr"])


def test_space_file_is_checked_and_sampled(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"optimizer.lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
                                "bs": {"type": "int", "low": 2, "high": 8, "step": 2},
                                "head": {"type": "categorical", "choices": [8, 16]}}))
    space = load_space(path)
    study = create_study(str(tmp_path / "s.journal"), "s", "maximize", "random", 0, False, None)
    values = suggest(study.ask(), space)
    assert 1e-3 <= values["optimizer.lr"] <= 0.1 and values["bs"] in (2, 4, 6, 8) and values["head"] in (8, 16)
    path.write_text(json.dumps({"optimizer.lr": {"type": "float", "low": 0.1}}))
    with pytest.raises(SweepError, match="'optimizer.lr' \\(float\\) is missing high"):
        load_space(path)


def test_pruning_hook_stops_a_trailing_trial(tmp_path):
    storage = str(tmp_path / "study.journal")
    study = create_study(storage, "prune", "maximize", "tpe", 0, True, None)
    for _ in range(2):  # two completed trials that reached 0.8 after epoch 2
        trial = study.ask()
        for epoch, value in ((1, 0.5), (2, 0.8)):
            trial.report(value, epoch)
        study.tell(trial, 0.8)
    trial = study.ask()
    hook = OptunaPruningHook(storage, "prune", trial._trial_id, "miou")
    trainer = SimpleNamespace(rank=0, epoch=0)
    hook.after_val(trainer, {"miou": 0.1})  # epoch 1 is the warm-up step: never pruned
    trainer.epoch = 1
    with pytest.raises(optuna.TrialPruned, match="pruned after epoch 2: miou=0.1000"):
        hook.after_val(trainer, {"miou": 0.1})
