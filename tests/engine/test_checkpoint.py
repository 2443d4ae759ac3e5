"""Checkpoint round trip, strict errors, corrupt files; device helpers."""
from __future__ import annotations

import os
import random
import signal
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from antgo.engine.checkpoint import (CheckpointError, get_state_dict, load_checkpoint, restore_rng,
                                     resume_checkpoint, rng_state, save_checkpoint)
from antgo.engine.device import DeviceError, autocast_context, make_grad_scaler, resolve_device
from antgo.engine.optim import build_lr_scheduler, build_optimizer


class Net(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.head = nn.Conv2d(width, 2, 1)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))))


class Wrapper(nn.Module):  # what DataParallel / DDP look like from the outside
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


def _train_steps(model, opt, sched, start, n):
    for it in range(start, start + n):
        sched.step(it)
        loss = model(torch.randn(2, 3, 8, 8)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_round_trip_restores_model_optimizer_scheduler_and_rng(tmp_path):
    torch.manual_seed(0)
    model = Net()
    opt = build_optimizer(model, dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=1e-4))
    sched = build_lr_scheduler(opt, dict(policy="CosineAnnealing", by_epoch=False, warmup="linear",
                                         warmup_iters=3), max_epochs=2, iters_per_epoch=5)
    _train_steps(model, opt, sched, 0, 4)
    path = save_checkpoint(tmp_path / "sub" / "latest.pth", Wrapper(model), opt, sched,
                           meta=dict(epoch=0, iter=4, best_score=np.float32(0.5), config={"a": 1}))
    assert os.path.isfile(path) and not [f for f in os.listdir(tmp_path / "sub") if f.startswith(".tmp")]
    assert torch.load(path, weights_only=True)["meta"]["epoch"] == 0  # safe loading works on our own files
    expected_random = (random.random(), np.random.rand(), torch.rand(3))
    _train_steps(model, opt, sched, 4, 3)  # continue the original run
    reference = {k: v.clone() for k, v in model.state_dict().items()}

    model2 = Net()
    opt2 = build_optimizer(model2, dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=1e-4))
    sched2 = build_lr_scheduler(opt2, dict(policy="CosineAnnealing", by_epoch=False, warmup="linear",
                                           warmup_iters=3), max_epochs=2, iters_per_epoch=5)
    ckpt = resume_checkpoint(path, model2, opt2, sched2)
    assert ckpt["meta"]["iter"] == 4 and ckpt["meta"]["best_score"] == pytest.approx(0.5)
    assert "'a': 1" in ckpt["meta"]["config"] and ckpt["meta"]["torch_version"] == torch.__version__
    assert not any(k.startswith("module.") for k in ckpt["state_dict"])
    assert all(v.device.type == "cpu" for v in ckpt["state_dict"].values())
    got_random = (random.random(), np.random.rand(), torch.rand(3))
    assert got_random[0] == expected_random[0] and got_random[1] == expected_random[1]
    assert torch.equal(got_random[2], expected_random[2])
    restore_rng(ckpt["rng"])  # rewind so the resumed steps draw the same batches as the original run
    random.random(), np.random.rand(), torch.rand(3)
    _train_steps(model2, opt2, sched2, 4, 3)
    for key, value in model2.state_dict().items():
        assert torch.allclose(value, reference[key], atol=1e-6), key


def test_rng_state_round_trip():
    state = rng_state()
    a = (random.random(), np.random.randn(3), torch.randn(3))
    restore_rng(state)
    b = (random.random(), np.random.randn(3), torch.randn(3))
    assert a[0] == b[0] and np.array_equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_module_prefix_is_revised_and_bare_state_dicts_load(tmp_path):
    src = Net()
    path = tmp_path / "bare.pth"
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, path)
    dst = Net()
    load_checkpoint(path, dst)
    assert all(torch.equal(a, b) for a, b in zip(get_state_dict(src).values(), get_state_dict(dst).values()))


def test_strict_mismatch_lists_keys_and_file(tmp_path):
    path = save_checkpoint(tmp_path / "a.pth", Net())

    class Other(Net):
        def __init__(self):
            super().__init__()
            self.extra = nn.Linear(2, 2)

    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, Other())
    msg = str(err.value)
    assert "missing keys (2): extra.weight, extra.bias" in msg and str(path) in msg
    ckpt = load_checkpoint(path, Other(), strict=False)  # non-strict: loads what matches
    assert "state_dict" in ckpt
    with pytest.raises(CheckpointError, match=r"shape mismatches.*conv.weight"):
        load_checkpoint(path, Net(width=8), strict=False)
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_checkpoint(path, nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)), revise_keys=[])


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*nope.pth"):
        load_checkpoint(tmp_path / "nope.pth", Net())
    good = save_checkpoint(tmp_path / "good.pth", Net())
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(open(good, "rb").read()[: 300])
    with pytest.raises(CheckpointError, match="corrupt.pth"):
        load_checkpoint(corrupt, Net())
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth.*corrupt"):
        load_checkpoint(garbage, Net())


class _CtrlCWhenPickled:
    """Sends SIGINT to this process while torch.save pickles it: Ctrl-C in the middle of a checkpoint write."""

    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGINT)
        return (OrderedDict, ())  # loads with weights_only


class _Scheduler:
    def state_dict(self):
        return {"step": 3, "trigger": _CtrlCWhenPickled()}


def test_ctrl_c_during_a_checkpoint_write_is_raised_once_the_file_is_complete(tmp_path):
    """Raised inside torch.save, the interrupt broke its zip writer (a RuntimeError that hid the signal) and
    the checkpoint was lost; now the write ends first and the interrupt follows."""
    path = tmp_path / "latest.pth"
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, Net(), scheduler=_Scheduler())
    assert torch.load(path, weights_only=True)["scheduler"] == {"step": 3, "trigger": {}}
    assert not list(tmp_path.glob(".tmp_*"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_resume_without_optimizer_state_is_an_error(tmp_path):
    path = save_checkpoint(tmp_path / "w.pth", Net())
    model = Net()
    with pytest.raises(CheckpointError, match="no 'optimizer'"):
        resume_checkpoint(path, model, torch.optim.SGD(model.parameters(), lr=0.1))


def test_resolve_device():
    assert resolve_device(gpu_id=-1) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device() == expected
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(DeviceError):
            resolve_device(gpu_id=0)


def test_autocast_is_a_noop_on_cpu_unless_allowed():
    x = torch.randn(4, 4)
    with autocast_context("cpu", enabled=True):
        assert (x @ x).dtype == torch.float32
    with autocast_context("cpu", enabled=True, allow_cpu=True):
        assert (x @ x).dtype == torch.bfloat16
    with autocast_context("cpu", enabled=False, allow_cpu=True):
        assert (x @ x).dtype == torch.float32
    assert not make_grad_scaler("cpu", enabled=True, dtype="float16").is_enabled()
