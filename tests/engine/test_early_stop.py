"""EarlyStoppingHook stops at the expected epoch (patience, min_delta, rule); BestWeightsHook's small file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import antgo.data  # noqa: F401  (registers datasets and transforms)
import antgo.metrics  # noqa: F401
import antgo.models  # noqa: F401
from antgo.engine import Trainer
from antgo.engine.hooks.early_stop import EarlyStoppingHook
from antgo.registry import METRICS


class Scripted:
    """Returns the next score of ``Scripted.scores`` on every validation."""

    scores: list[float] = []
    calls = 0

    def __init__(self, key: str = "acc") -> None:
        self.key = key

    def keys(self) -> dict[str, list[str]]:
        return {"pred": ["pred_segments"], "gt": ["segments"]}

    def __call__(self, preds: list[dict], gts: list[dict]) -> dict[str, float]:
        score = Scripted.scores[Scripted.calls]
        Scripted.calls += 1
        return {self.key: score}


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> type[Scripted]:
    monkeypatch.setattr(METRICS, "_modules", dict(METRICS._modules))
    METRICS.register_module(name="EarlyStopScripted", module=Scripted)
    Scripted.calls = 0
    return Scripted


@pytest.mark.parametrize("scores,key,patience,min_delta,stop_epoch,best_epoch", [
    ([0.5, 0.7, 0.69, 0.7, 0.6, 0.9, 0.9, 0.9], "acc", 3, 0.0, 5, 2),   # a tie does not reset the patience
    ([0.5, 0.52, 0.53, 0.54, 0.9, 0.9], "acc", 2, 0.05, 3, 3),          # gains below min_delta do not count
    ([3.0, 2.0, 2.5, 1.0, 1.5, 1.6, 1.7, 0.1], "val_loss", 3, 0.0, 7, 4),  # rule 'less' from the name
])
def test_training_stops_at_the_expected_epoch(tiny_seg_cfg: dict, tmp_path: Path, scripted: Any, scores: list,
                                              key: str, patience: int, min_delta: float, stop_epoch: int,
                                              best_epoch: int) -> None:
    scripted.scores = [scores[0]] + scores  # the first call is the dry run on one batch before training
    tiny_seg_cfg["evaluation"] = dict(interval=1, metric=dict(type="EarlyStopScripted", key=key), save_best=key)
    tiny_seg_cfg["custom_hooks"] = [dict(type="EarlyStoppingHook", patience=patience, min_delta=min_delta)]
    tiny_seg_cfg["checkpoint_config"] = dict(interval=100)  # only the last epoch: the stopping one must count
    trainer = Trainer(tiny_seg_cfg, work_dir=str(tmp_path), device="cpu")
    trainer.config_dataloader()
    trainer.config_model()
    result = trainer.start_train(max_epochs=len(scores))
    assert [h["epoch"] for h in result["history"]] == list(range(1, stop_epoch + 1))
    assert result["epochs_run"] == stop_epoch and "early stopping" in result["stop_reason"]
    assert torch.load(tmp_path / "latest.pth", weights_only=False)["meta"]["epoch"] == stop_epoch
    assert json.loads((tmp_path / "best.json").read_text())["epoch"] == best_epoch
    weights = torch.load(tmp_path / "best_weights.pth", weights_only=True)
    assert weights["meta"]["epoch"] == best_epoch and "optimizer" not in weights
    full = torch.load(tmp_path / "best.pth", weights_only=False)
    assert all(torch.equal(weights["state_dict"][k], v) for k, v in full["state_dict"].items())


def test_patience_must_be_positive() -> None:
    with pytest.raises(ValueError, match="patience must be >= 1"):
        EarlyStoppingHook(patience=0)
