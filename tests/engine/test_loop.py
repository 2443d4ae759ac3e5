"""The training loop: no host sync per iteration, numerical faults, early key checks, max_iters and resume,
the device batch transform seam, fast-path defaults."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

import antgo.data  # noqa: F401  (registers datasets and transforms)
import antgo.metrics  # noqa: F401
import antgo.models  # noqa: F401
from antgo.engine import Trainer
from antgo.engine.numerics import NonFiniteError
from antgo.registry import MODELS


def make(cfg: dict[str, Any], work_dir: Path, validate: bool = True, **model_kw: Any) -> Trainer:
    trainer = Trainer(cfg, work_dir=str(work_dir), device="cpu")
    trainer.config_dataloader(with_validate=validate)
    trainer.config_model(**model_kw)
    return trainer


class HostReads(torch.Tensor):
    """A tensor type that counts every read of its values on the host (item, float, tolist, bool, ...).

    Ops on it return it again, so everything computed from a loss (sums, stacks, flags) keeps counting."""

    reads = 0
    _READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__float__, torch.Tensor.__int__,
              torch.Tensor.__bool__, torch.Tensor.numpy, torch.Tensor.cpu, torch.Tensor.__format__}

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in cls._READS:
            HostReads.reads += 1
        return super().__torch_function__(func, types, args, kwargs or {})


@MODELS.register_module()
class FaultyNet(torch.nn.Module):
    """A 1×1 conv + BN segmentor whose losses are ``HostReads`` tensors; it can go wrong at iteration k:
    ``nan`` (NaN loss from k on), ``nan_once`` (only at k), ``bn_inf`` (an Inf BN statistic at k, finite loss)."""

    def __init__(self, fault: str | None = None, at: int = 0, classes: int = 4) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, classes, 1)
        self.bn = torch.nn.BatchNorm2d(classes)
        self.fault, self.at, self.calls = fault, at, 0

    def forward_train(self, image: torch.Tensor, segments: torch.Tensor, **kw: Any) -> dict[str, Any]:
        self.calls += 1
        if self.fault == "bn_inf" and self.calls == self.at:
            with torch.no_grad():
                self.bn.running_var[0] = float("inf")
        logits = self.bn(self.conv(image))
        loss = torch.nn.functional.cross_entropy(logits, segments[:, 0].long(), ignore_index=255)
        if self.fault in ("nan", "nan_once") and (self.calls == self.at or (self.fault == "nan" and self.calls > self.at)):
            loss = loss * float("nan")
        return {"loss_seg": loss.as_subclass(HostReads), "loss_aux": (0.1 * loss).as_subclass(HostReads)}

    def forward_test(self, image: torch.Tensor, **kw: Any) -> dict[str, torch.Tensor]:
        return {"pred_segments": self.bn(self.conv(image)).argmax(1)}


@pytest.fixture
def faulty_cfg(tiny_seg_cfg: dict) -> dict:
    tiny_seg_cfg["model"] = dict(type="FaultyNet")
    tiny_seg_cfg["data"]["train_dataloader"]["samples_per_gpu"] = 2  # 6 iterations per epoch
    return tiny_seg_cfg


def test_loss_values_reach_the_host_once_per_log_interval(faulty_cfg: dict, tmp_path: Path) -> None:
    faulty_cfg["log_config"] = dict(interval=3)
    faulty_cfg["checkpoint_config"] = dict(interval=0, save_last=False)
    trainer = make(faulty_cfg, tmp_path, validate=False)
    HostReads.reads = 0
    trainer.start_train(max_epochs=2)  # 12 iterations, log interval 3
    assert trainer.iter == 12
    assert trainer.meter.transfers == 4
    assert HostReads.reads == 4  # one copy per interval: a per-iteration read would make it >= 12
    assert set(trainer.log_vars) >= {"loss_seg", "loss_aux", "loss", "lr", "time", "data_time"}


def test_nan_at_iteration_k_is_reported_as_k_and_never_checkpointed(faulty_cfg: dict, tmp_path: Path) -> None:
    faulty_cfg["model"] = dict(type="FaultyNet", fault="nan", at=8)  # epoch 2, iteration 2 of 6
    faulty_cfg["log_config"] = dict(interval=5)
    with pytest.raises(NonFiniteError, match=r"'loss_seg', 'loss_aux', 'loss' at epoch 2, iter 2/6 \(global iter 8\)"
                       ) as info:
        make(faulty_cfg, tmp_path).start_train(max_epochs=3)
    assert info.value.iteration == 8 and "loss_seg" in info.value.keys
    assert any("last good checkpoint" in note and "latest.pth" in note for note in info.value.__notes__)
    for name in ("latest.pth", "best.pth"):
        ckpt = torch.load(tmp_path / name, weights_only=True)
        assert ckpt["meta"]["iter"] == 6  # the end of epoch 1, the last good state
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert not (tmp_path / "epoch_2.pth").exists()


def test_a_nonfinite_bn_statistic_stops_before_the_checkpoint(faulty_cfg: dict, tmp_path: Path) -> None:
    faulty_cfg["model"] = dict(type="FaultyNet", fault="bn_inf", at=9)
    with pytest.raises(NonFiniteError, match=r"bn\.running_var") as info:
        make(faulty_cfg, tmp_path, validate=False).start_train(max_epochs=3)
    assert info.value.keys == ["bn.running_var"] and info.value.iteration == 12
    assert torch.load(tmp_path / "latest.pth", weights_only=True)["meta"]["iter"] == 6
    assert not (tmp_path / "epoch_2.pth").exists()


@pytest.mark.parametrize("fault,fails", [("nan_once", False), ("nan", True)])
def test_skip_nonfinite_skips_a_bounded_number_of_steps(faulty_cfg: dict, tmp_path: Path, fault: str,
                                                        fails: bool) -> None:
    faulty_cfg["model"] = dict(type="FaultyNet", fault=fault, at=3)
    faulty_cfg["optimizer_config"] = dict(grad_clip=None, skip_nonfinite=1)
    trainer = make(faulty_cfg, tmp_path, validate=False)
    if fails:  # a second bad step is one too many
        with pytest.raises(NonFiniteError, match=r"global iter 4\): 2 bad steps.*skip_nonfinite=1"):
            trainer.start_train(max_epochs=1)
        return
    trainer.start_train(max_epochs=1)
    assert trainer.skipped_steps == 1 and trainer.iter == 6
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_save_best_typo_fails_before_the_first_iteration(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    tiny_seg_cfg["evaluation"]["save_best"] = "mIoU"
    trainer = make(tiny_seg_cfg, tmp_path)
    with pytest.raises(KeyError, match=r"save_best='mIoU'.*Did you mean 'miou'"):
        trainer.start_train(max_epochs=2)
    assert trainer.iter == 0 and not list(tmp_path.glob("*.pth"))


def test_forward_test_key_the_metric_does_not_read_fails_before_training(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    tiny_seg_cfg["evaluation"]["metric"] = dict(type="SegMIOU", class_num=4, pred_key="pred_segment")
    trainer = make(tiny_seg_cfg, tmp_path)
    with pytest.raises(KeyError, match=r"reads prediction 'pred_segment'.*Did you mean 'pred_segments'") as info:
        trainer.start_train(max_epochs=2)
    assert "checked before training on one validation batch" in info.value.__notes__
    assert trainer.iter == 0


def test_max_iters_resumes_bit_identically(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    # 12 images, batch 4: 3 iterations per pass; checkpoints every 4 iterations cut a pass in the middle
    tiny_seg_cfg.update(deterministic=True)
    tiny_seg_cfg["lr_config"] = dict(policy="Step", step=[5], gamma=0.5)
    tiny_seg_cfg["checkpoint_config"] = dict(interval=4)
    tiny_seg_cfg["evaluation"]["interval"] = 4
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        full = make(tiny_seg_cfg, tmp_path / "full")
        result = full.start_train(max_iters=10)
        part = make(tiny_seg_cfg, tmp_path / "part")
        part.start_train(max_iters=4)
        resumed = make(tiny_seg_cfg, tmp_path / "resumed", resume_from=str(tmp_path / "part" / "iter_4.pth"))
        resumed_result = resumed.start_train(max_iters=10)
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    assert result["iters"] == resumed_result["iters"] == 10 and resumed.start_epoch == 1
    assert sorted(p.name for p in (tmp_path / "full").glob("iter_*.pth")) == ["iter_10.pth", "iter_4.pth",
                                                                               "iter_8.pth"]
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    assert resumed.optimizer.param_groups[0]["lr"] == full.optimizer.param_groups[0]["lr"] == pytest.approx(0.025)
    assert [h["iter"] for h in result["history"]] == [3, 6, 9, 10]
    assert [h["val"] is not None for h in result["history"]] == [False, True, True, True]  # evals at 4, 8, 10
    assert [h["iter"] for h in resumed_result["history"]] == [3, 6, 9, 10]
    assert resumed_result["history"][-1]["train"]["loss"] == pytest.approx(result["history"][-1]["train"]["loss"])


def test_device_batch_transform_runs_after_the_copy_in_training_and_evaluation(
        tiny_seg_cfg: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import antgo.data.device_pipeline as device_pipeline

    calls: dict[str, int] = {}

    def split_for_device(split_cfg: dict, device: Any, key_path: str = "data") -> tuple[dict, Any]:
        name = split_cfg["train_or_test"]

        def transform(batch: dict[str, Any]) -> dict[str, Any]:
            assert batch["image"].device == torch.device(device)
            calls[name] = calls.get(name, 0) + 1
            return batch

        return split_cfg, transform

    monkeypatch.setattr(device_pipeline, "split_for_device", split_for_device)
    trainer = make(tiny_seg_cfg, tmp_path)
    trainer.start_train(max_epochs=1)
    assert calls == {"train": 3, "val": 2}  # 3 train batches; the dry run + one validation of one batch


def test_fast_path_defaults_follow_the_device(caplog: pytest.LogCaptureFixture) -> None:
    from antgo.engine.device import fast_path

    benchmark = torch.backends.cudnn.benchmark
    try:
        cuda = fast_path({}, torch.device("cuda"))
        assert (cuda.amp, cuda.channels_last, cuda.cudnn_benchmark) == (True, True, True)
        assert torch.backends.cudnn.benchmark is True
        assert fast_path({}, torch.device("cuda"), deterministic=True).cudnn_benchmark is False
        off = fast_path(dict(amp=False, channels_last=False, cudnn_benchmark=False), torch.device("cuda"))
        assert (off.amp, off.channels_last, off.cudnn_benchmark) == (False, False, False)
    finally:
        torch.backends.cudnn.benchmark = benchmark
    cpu = fast_path({}, torch.device("cpu"))
    assert (cpu.amp, cpu.channels_last) == (False, False)
    with caplog.at_level(logging.WARNING, logger="antgo"):
        assert fast_path(dict(amp=True), torch.device("cpu")).amp is False
    assert "amp=True needs CUDA" in caplog.text
    with pytest.raises(TypeError, match="channels_last"):
        fast_path(dict(channels_last="yes"), torch.device("cpu"))


def test_pinned_memory_is_the_cuda_default(tiny_seg_cfg: dict) -> None:
    from antgo.data.builder import build_split_loader

    loader, transform = build_split_loader(tiny_seg_cfg["data"]["train"], "data.train", "cuda", samples_per_gpu=2)
    assert loader.pin_memory is True and callable(transform)  # the seam moves augmentation to the device
    cpu_loader, _ = build_split_loader(tiny_seg_cfg["data"]["train"], "data.train", "cpu", samples_per_gpu=2)
    assert cpu_loader.pin_memory is False


def test_loss_meter_averages_a_key_over_the_steps_that_returned_it() -> None:
    from antgo.engine.numerics import LossMeter

    meter = LossMeter(torch.device("cpu"))
    meter.add({"loss": torch.tensor(1.0), "loss_aux": torch.tensor(2.0)})
    meter.add({"loss": torch.tensor(3.0)})
    assert meter.flush(2) == {"loss": 2.0, "loss_aux": 2.0} and meter.transfers == 1
    meter.add({"loss": torch.tensor(float("inf"))})
    with pytest.raises(NonFiniteError, match="'loss' at global iter 3"):
        meter.check()


def test_loss_meter_keeps_sums_and_the_first_bad_iteration_across_buffer_folds() -> None:
    from antgo.engine.numerics import LossMeter

    meter = LossMeter(torch.device("cpu"))
    meter.start(100)
    steps = 2 * LossMeter.ROWS + 5  # two folds while adding, one more at the flush
    for i in range(steps):
        terms = {"loss": torch.tensor(float(i))}
        if i >= LossMeter.ROWS + 1:  # a key that appears after the first fold, with new columns
            terms["loss_aux"] = torch.tensor(1.0)
        meter.add(terms)
    averages = meter.flush(100 + steps)
    assert averages == {"loss": (steps - 1) / 2, "loss_aux": 1.0} and meter.transfers == 1
    for i in range(steps):
        value = float("nan") if i in (LossMeter.ROWS + 3, LossMeter.ROWS + 9) else 1.0
        meter.add({"loss": torch.tensor(value)})
    with pytest.raises(NonFiniteError, match=f"'loss' at global iter {100 + steps + LossMeter.ROWS + 4}") as info:
        meter.flush(100 + 2 * steps)
    assert info.value.iteration == 100 + steps + LossMeter.ROWS + 4


def test_loss_meter_add_runs_no_tensor_op_between_folds() -> None:
    """A step only keeps references; the stacking waits for the fold (every ROWS steps) or the flush."""
    from torch.profiler import ProfilerActivity, profile

    from antgo.engine.numerics import LossMeter

    meter = LossMeter(torch.device("cpu"))
    terms = {"loss_seg": torch.tensor(0.5), "loss": torch.tensor(0.5)}
    meter.add(terms)  # the first step allocates the sums
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(LossMeter.ROWS - 1):
            meter.add(terms)
    assert [e.name for e in prof.events() if e.name.startswith("aten::")] == []
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        meter.add(terms)  # the buffer is full: this step folds
    assert any(e.name == "aten::stack" for e in prof.events())
    assert meter.flush(LossMeter.ROWS + 1) == {"loss_seg": 0.5, "loss": 0.5}


def test_a_logged_parameter_is_averaged_over_its_values_at_each_step() -> None:
    """A model may return a parameter or buffer (a learnt temperature, a running statistic) to log it; the
    optimizer changes it in place after the step, before the meter reads the kept terms."""
    from antgo.engine.numerics import LossMeter, parse_losses

    temperature = torch.nn.Parameter(torch.tensor(1.0))
    weight = torch.nn.Parameter(torch.tensor(2.0))
    meter = LossMeter(torch.device("cpu"))
    for _ in range(4):  # temperature 1, 2, 3, 4 at the steps
        loss, terms = parse_losses({"loss_seg": weight * 3, "temperature": temperature})
        meter.add(terms)
        with torch.no_grad():
            temperature.add_(1.0)
    assert meter.flush(4) == {"loss_seg": 6.0, "temperature": 2.5, "loss": 6.0}


def test_device_augmentation_trains_and_validates_through_the_loop(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    for split in ("train", "val"):  # the CUDA default, forced on CPU tensors
        tiny_seg_cfg["data"][split]["device_augmentation"] = True
    trainer = make(tiny_seg_cfg, tmp_path)
    assert trainer.train_transform is not None and trainer.val_transform is not None
    result = trainer.start_train(max_epochs=1)
    assert result["iters"] == 3 and 0.0 <= result["best_score"] <= 1.0
