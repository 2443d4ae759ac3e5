"""Hooks: dispatch order and priorities, failing-hook message, logger averaging, checkpoint pruning."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import antgo.data  # noqa: F401
import antgo.models  # noqa: F401
from antgo.engine import Trainer
from antgo.engine.hooks import (PRIORITIES, CheckpointHook, EvalHook, Hook, LrSchedulerHook, ProgressBarHook,
                                TextLoggerHook, get_priority, infer_rule)


class Recorder(Hook):
    def __init__(self, name: str, log: list[str], priority: int | str = "NORMAL") -> None:
        self.name, self.log, self.priority = name, log, get_priority(priority)

    def before_run(self, trainer: Trainer) -> None:
        self.log.append(f"{self.name}.before_run")

    def before_epoch(self, trainer: Trainer) -> None:
        self.log.append(f"{self.name}.before_epoch{trainer.epoch}")

    def before_iter(self, trainer: Trainer) -> None:
        self.log.append(f"{self.name}.before_iter{trainer.iter}")

    def after_iter(self, trainer: Trainer) -> None:
        self.log.append(f"{self.name}.after_iter{trainer.iter}")

    def after_epoch(self, trainer: Trainer) -> None:
        self.log.append(f"{self.name}.after_epoch{trainer.epoch}")

    def after_val(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        self.log.append(f"{self.name}.after_val{trainer.epoch}")

    def after_run(self, trainer: Trainer) -> None:
        self.log.append(f"{self.name}.after_run")


def make_trainer(cfg: dict, work_dir: Path, validate: bool = True) -> Trainer:
    trainer = Trainer(cfg, work_dir=str(work_dir), device="cpu")
    trainer.config_dataloader(with_validate=validate)
    trainer.config_model()
    return trainer


def test_default_hooks_are_sorted_by_priority(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    trainer = make_trainer(tiny_seg_cfg, tmp_path)
    names = [type(h).__name__ for h in trainer.hooks]
    assert names == ["LrSchedulerHook", "EvalHook", "CheckpointHook", "BestWeightsHook", "TextLoggerHook",
                     "RunSummaryHook", "ProgressBarHook"]
    assert isinstance(trainer.hooks[0], LrSchedulerHook) and isinstance(trainer.hooks[1], EvalHook)


def test_hook_order_per_stage(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    tiny_seg_cfg["data"]["train_dataloader"]["samples_per_gpu"] = 6  # 2 iterations per epoch
    trainer = make_trainer(tiny_seg_cfg, tmp_path)
    log: list[str] = []
    trainer.register_hook(Recorder("low", log, "LOW"))
    trainer.register_hook(Recorder("high", log, "HIGH"))
    trainer.register_hook(Recorder("low2", log, 70))  # same priority as "low": registration order
    trainer.start_train(max_epochs=1)
    assert log == [
        "high.before_run", "low.before_run", "low2.before_run",
        "high.before_epoch0", "low.before_epoch0", "low2.before_epoch0",
        "high.before_iter0", "low.before_iter0", "low2.before_iter0",
        "high.after_iter1", "low.after_iter1", "low2.after_iter1",
        "high.before_iter1", "low.before_iter1", "low2.before_iter1",
        "high.after_iter2", "low.after_iter2", "low2.after_iter2",
        # EvalHook (ABOVE_NORMAL, 40) runs after "high" (30) and dispatches after_val to every hook
        "high.after_epoch0",
        "high.after_val0", "low.after_val0", "low2.after_val0",
        "low.after_epoch0", "low2.after_epoch0",
        "high.after_run", "low.after_run", "low2.after_run",
    ]


class Failing(Hook):
    priority = PRIORITIES["LOW"]

    def after_epoch(self, trainer: Trainer) -> None:
        raise ValueError("disk full")


def test_failing_hook_is_named_and_the_error_propagates(tiny_seg_cfg: dict, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    trainer = make_trainer(tiny_seg_cfg, tmp_path, validate=False)
    log: list[str] = []
    trainer.register_hook(Failing())
    trainer.register_hook(Recorder("rec", log, "VERY_LOW"))
    with caplog.at_level(logging.ERROR, logger="antgo"), pytest.raises(ValueError, match="disk full") as info:
        trainer.start_train(max_epochs=2)
    note = "in hook Failing.after_epoch (epoch 1, iter 3)"
    assert note in info.value.__notes__
    assert note in caplog.text
    assert log[-1] == "rec.after_run" and "rec.after_epoch0" not in log


def test_priority_names_and_errors() -> None:
    assert get_priority("very_high") == 10 and get_priority(42) == 42
    with pytest.raises(ValueError, match="unknown hook priority"):
        get_priority("URGENT")


@pytest.mark.parametrize("key,rule", [("miou", "greater"), ("top1", "greater"), ("mAP", "greater"),
                                      ("val_loss", "less"), ("error", "less")])
def test_rule_inference(key: str, rule: str) -> None:
    assert infer_rule(key) == rule


def test_rule_inference_refuses_unknown_names(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="evaluation.rule"):
        infer_rule("score")
    tiny_seg_cfg["evaluation"].update(save_best="score", rule=None)
    with pytest.raises(ValueError, match="evaluation.rule"):
        make_trainer(tiny_seg_cfg, tmp_path)


def test_text_logger_averages_over_the_interval(tiny_seg_cfg: dict, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    tiny_seg_cfg["data"]["train_dataloader"]["samples_per_gpu"] = 2  # 6 iterations per epoch
    tiny_seg_cfg["log_config"] = dict(interval=3)
    trainer = make_trainer(tiny_seg_cfg, tmp_path, validate=False)
    losses: list[float] = []

    class Grab(Hook):
        def after_iter(self, trainer: Trainer) -> None:
            losses.append(float(trainer.outputs["loss"]))  # this step's loss (reading it syncs: tests only)

    trainer.register_hook(Grab())
    with caplog.at_level(logging.INFO, logger="antgo.engine.hooks.logger"):
        trainer.start_train(max_epochs=1)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Epoch [")]
    assert [line.split("\t")[0] for line in lines] == ["Epoch [1][3/6]", "Epoch [1][6/6]"]
    assert f"loss: {sum(losses[:3]) / 3:.4f}" in lines[0] and f"loss: {sum(losses[3:]) / 3:.4f}" in lines[1]
    for field in ("lr: ", "eta: ", "time: ", "data_time: ", "loss_seg: "):
        assert field in lines[0]


def test_checkpoint_hook_keeps_the_newest(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    tiny_seg_cfg["checkpoint_config"] = dict(interval=1, max_keep_ckpts=2)
    trainer = make_trainer(tiny_seg_cfg, tmp_path, validate=False)
    trainer.start_train(max_epochs=4)
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["epoch_3.pth", "epoch_4.pth", "latest.pth"]
    assert (tmp_path / "latest.pth").stat().st_ino == (tmp_path / "epoch_4.pth").stat().st_ino


def test_unknown_checkpoint_key_is_an_error(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    tiny_seg_cfg["checkpoint_config"] = dict(interval=1, keep=3)
    with pytest.raises(TypeError, match="checkpoint_config"):
        make_trainer(tiny_seg_cfg, tmp_path)


def test_progress_bar_respects_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeTrainer:
        rank, epoch, max_epochs, iters_per_epoch = 0, 0, 1, 3

    monkeypatch.setenv("ANTGO_PROGRESS", "0")
    hook = ProgressBarHook()
    hook.before_epoch(FakeTrainer())  # type: ignore[arg-type]
    assert hook._bar is None
    forced = ProgressBarHook(enabled=True)
    forced.before_epoch(FakeTrainer())  # type: ignore[arg-type]
    assert forced._bar is not None
    forced.after_run(FakeTrainer())  # type: ignore[arg-type]
    assert forced._bar is None


def test_checkpoint_and_logger_hooks_validate_arguments() -> None:
    with pytest.raises(ValueError):
        TextLoggerHook(interval=0)
    assert CheckpointHook(interval=2).interval == 2
    with pytest.raises(ValueError, match="rule"):
        EvalHook(dataloader=[], metrics=[object()], rule="bigger")


def test_eval_hook_accepts_a_metric_config(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    trainer = make_trainer(tiny_seg_cfg, tmp_path, validate=False)
    loader = trainer.train_loader
    hook = EvalHook(dataloader=loader, metric=dict(type="SegMIOU", class_num=4), save_best="miou")
    trainer.register_hook(hook)
    result = trainer.start_train(max_epochs=1)
    assert type(hook.metrics[0]).__name__ == "SegMIOU" and result["best_metric"] == "miou"


@pytest.mark.parametrize("interval,start,expected", [
    (1, None, [1, 2, 3, 4, 5]),
    (2, None, [2, 4, 5]),          # every 2 epochs, and always the last one
    (2, 1, [1, 3, 5]),
    (3, 2, [2, 5]),
])
def test_eval_hook_schedule(interval: int, start: int | None, expected: list[int]) -> None:
    class FakeTrainer:
        max_epochs = 5
        epoch = 0

    hook = EvalHook(dataloader=[], metrics=[object()], interval=interval, start=start)
    trainer = FakeTrainer()
    due = []
    for trainer.epoch in range(5):
        if hook._due(trainer):  # type: ignore[arg-type]
            due.append(trainer.epoch + 1)
    assert due == expected
