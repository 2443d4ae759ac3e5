"""Checks at the start of a run that turn torch's deep errors into messages naming the cause and the fix: a
resume with another optimizer or lr, a checkpoint of other layer sizes or of 0 bytes, batch fields that
forward_train does not take, layers whose sizes do not fit."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from antgo.engine import Trainer
from antgo.engine.checkpoint import CheckpointError, load_checkpoint, resume_checkpoint, save_checkpoint
from antgo.registry import MODELS

LAYER_NOTE = "the model's layers do not fit together; check the channel settings of model.*"


def make(cfg: Any, work_dir: Path, validate: bool = False, **model_kw: Any) -> Trainer:
    trainer = Trainer(cfg, work_dir=str(work_dir), device="cpu")
    trainer.config_dataloader(with_validate=validate)
    trainer.config_model(**model_kw)
    return trainer


@pytest.fixture(scope="module")
def sgd_run(seg_cfg_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch with SGD(lr=0.05) and no validation: latest.pth at epoch 1."""
    work = tmp_path_factory.mktemp("sgd") / "run"
    make(seg_cfg_factory(max_epochs=1), work).start_train()
    return work


def resume(cfg: dict[str, Any], sgd_run: Path, tmp_path: Path, checkpoint: Path | None = None) -> Trainer:
    """A resume of the run's copy (from its latest.pth, or ``checkpoint``) to epoch 2: one more epoch."""
    work = tmp_path / "run"
    shutil.copytree(sgd_run, work)
    trainer = make(cfg, work, resume_from=str(checkpoint or work / "latest.pth"))
    trainer.start_train(max_epochs=2)
    return trainer


def test_a_resume_with_another_lr_warns_that_the_checkpoints_lr_goes_on(
        sgd_run: Path, seg_cfg_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = seg_cfg_factory()
    cfg["optimizer"]["lr"] = 1e-5
    with caplog.at_level(logging.WARNING, logger="antgo"):
        trainer = resume(cfg, sgd_run, tmp_path)
    assert "the config's lr is 1e-05, the checkpoint's 0.05" in caplog.text
    assert "continues the checkpoint's optimizer and lr schedule" in caplog.text and "--load-from" in caplog.text
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)  # what the warning says


def test_a_resume_with_another_optimizer_type_is_refused(sgd_run: Path, seg_cfg_factory: Any,
                                                         tmp_path: Path) -> None:
    cfg = seg_cfg_factory()
    cfg["optimizer"] = dict(type="AdamW", lr=0.05)
    with pytest.raises(CheckpointError) as info:
        resume(cfg, sgd_run, tmp_path)
    message = str(info.value)
    assert "holds the optimizer state of SGD, but the config builds AdamW" in message
    assert "Set optimizer.type='SGD' to resume" in message and "--load-from" in message
    model = nn.Conv2d(1, 1, 1)  # the checkpoint API checks the same before torch takes the state in
    torch.save({"state_dict": model.state_dict(), "meta": {"optimizer_type": "SGD"},
                "optimizer": torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9).state_dict()},
               tmp_path / "sgd.pth")
    with pytest.raises(CheckpointError, match="optimizer state of SGD, but the config builds AdamW"):
        resume_checkpoint(tmp_path / "sgd.pth", model, torch.optim.AdamW(model.parameters()))


def test_an_old_checkpoint_without_the_type_is_compared_by_its_settings(sgd_run: Path, seg_cfg_factory: Any,
                                                                        tmp_path: Path) -> None:
    old = torch.load(sgd_run / "latest.pth", weights_only=True)
    del old["meta"]["optimizer_type"]
    torch.save(old, tmp_path / "old.pth")
    cfg = seg_cfg_factory()
    cfg["optimizer"] = dict(type="Adam", lr=0.05)
    with pytest.raises(CheckpointError, match=r"another optimizer \(its settings \['dampening', 'momentum', "
                                              r"'nesterov'\] are not Adam's\)"):
        resume(cfg, sgd_run, tmp_path / "a", checkpoint=tmp_path / "old.pth")
    assert resume(seg_cfg_factory(), sgd_run, tmp_path / "b", checkpoint=tmp_path / "old.pth").iter == 6


def test_a_checkpoint_of_other_layer_sizes_says_so(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "five.pth", nn.Sequential(nn.Linear(4, 5)))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, nn.Sequential(nn.Linear(4, 3)), strict=False)
    message = str(info.value)
    assert "shape mismatches (2): 0.weight: checkpoint (5, 4) vs model (3, 4)" in message
    assert "trained with other layer sizes (e.g. another number of classes): 0.weight is (5, 4) there and " \
           "(3, 4) in this model" in message
    assert "strict=False" not in message  # it would not help
    with pytest.raises(CheckpointError, match=r"missing keys .*\(load with strict=False to ignore"):
        load_checkpoint(path, nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 2)))


def test_an_empty_checkpoint_says_it_is_empty(tmp_path: Path) -> None:
    (tmp_path / "best.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"best.pth is empty \(0 bytes\): a copy or download that was "
                                              r"interrupted leaves such a file. Copy it again"):
        load_checkpoint(tmp_path / "best.pth", nn.Linear(1, 1))


class NeedsLabel(nn.Module):
    """A user's classifier whose forward_train wants ``label``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward_train(self, image: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": self.conv(image).mean()}

    def forward_test(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pred_segments": self.conv(image).argmax(1)}


class FailsLater(NeedsLabel):
    """A layer error at the second step only: not the first forward, so no note."""

    calls = 0

    def forward_train(self, image: torch.Tensor, segments: torch.Tensor) -> dict[str, torch.Tensor]:
        FailsLater.calls += 1
        if FailsLater.calls == 2:
            raise RuntimeError("expected input[4, 3, 32, 32] to have 16 channels, but got 3 channels instead")
        return {"loss": self.conv(image).mean()}


@pytest.fixture
def user_models(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MODELS, "_modules", dict(MODELS._modules))
    MODELS.register_module(module=NeedsLabel)
    MODELS.register_module(module=FailsLater)
    FailsLater.calls = 0


def test_batch_fields_forward_train_does_not_take_are_named(seg_cfg_factory: Any, tmp_path: Path,
                                                            user_models: None) -> None:
    cfg = seg_cfg_factory()
    cfg["model"] = dict(type="NeedsLabel")
    with pytest.raises(TypeError) as info:
        make(cfg, tmp_path).start_train(max_epochs=1)
    message = str(info.value)
    assert "NeedsLabel.forward_train cannot take the training batch" in message
    assert "the batch has the fields ['image', 'segments'], forward_train needs ['image', 'label']" in message
    assert "data.train.inputs_def.fields" in message
    assert not (tmp_path / "config.py").exists()


@pytest.mark.parametrize("validate,where", [(True, "the validation check before training"),
                                            (False, "the first training step")])
def test_layers_that_do_not_fit_name_the_config_keys(seg_cfg_factory: Any, tmp_path: Path, validate: bool,
                                                     where: str) -> None:
    cfg = seg_cfg_factory()
    cfg["model"]["decode_head"]["in_channels"] = 8  # the backbone gives 16
    with pytest.raises(RuntimeError, match="to have 8 channels") as info:
        make(cfg, tmp_path, validate=validate).start_train(max_epochs=1)
    assert f"in {where}: {LAYER_NOTE}" in "\n".join(info.value.__notes__)
    assert "model.decode_head in_channels" in info.value.__notes__[-1]


def test_an_error_at_a_later_step_gets_no_layer_note(seg_cfg_factory: Any, tmp_path: Path,
                                                     user_models: None) -> None:
    cfg = seg_cfg_factory()
    cfg["model"] = dict(type="FailsLater")
    with pytest.raises(RuntimeError, match="to have 16 channels") as info:
        make(cfg, tmp_path).start_train(max_epochs=1)
    assert not any(LAYER_NOTE in note for note in getattr(info.value, "__notes__", []))
