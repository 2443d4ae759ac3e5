"""BaseModule: init_cfg handling, forward dispatch; build_model."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from antgo.models import BaseModule, build_model
from antgo.registry import MODELS


class Tiny(BaseModule):
    def __init__(self, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward_train(self, x):
        return {"mode": "train"}

    def forward_test(self, x):
        return {"mode": "test"}


class Parent(BaseModule):
    def __init__(self, init_cfg=None, child_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.child = Tiny(init_cfg=child_cfg)
        self.own = nn.Linear(2, 2)


def test_default_init_sets_norm_to_identity():
    m = Tiny()
    with torch.no_grad():
        m.bn.weight.fill_(3.0)
        m.bn.bias.fill_(2.0)
    m.init_weights()
    assert torch.all(m.bn.weight == 1) and torch.all(m.bn.bias == 0)
    assert m.is_init


def test_constant_init_only_touches_named_layers():
    m = Tiny(init_cfg=dict(type="Constant", layer="Conv2d", val=0.5, bias=0.1))
    fc_before = m.fc.weight.clone()
    m.init_weights()
    assert torch.all(m.conv.weight == 0.5) and torch.allclose(m.conv.bias, torch.full((4,), 0.1))
    assert torch.equal(m.fc.weight, fc_before)


@pytest.mark.parametrize("kind", ["Kaiming", "Normal", "Xavier"])
def test_random_inits_change_weights(kind):
    m = Tiny(init_cfg=dict(type=kind, layer=["Conv2d", "Linear"]))
    before = m.conv.weight.clone()
    m.init_weights()
    assert not torch.equal(before, m.conv.weight)
    assert torch.all(m.conv.bias == 0)


def test_children_init_after_parent():
    m = Parent(init_cfg=dict(type="Constant", layer="Linear", val=2.0),
               child_cfg=dict(type="Constant", layer="Linear", val=3.0))
    m.init_weights()
    assert torch.all(m.own.weight == 2.0)
    assert torch.all(m.child.fc.weight == 3.0)  # the child's own init_cfg wins


def test_pretrained_with_prefix(tmp_path):
    src = Parent()
    with torch.no_grad():
        src.child.fc.weight.fill_(7.0)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": src.state_dict(), "meta": {}}, path)
    m = Tiny(init_cfg=dict(type="Pretrained", checkpoint=str(path), prefix="child"))
    m.init_weights()
    assert torch.all(m.fc.weight == 7.0)
    assert torch.equal(m.conv.weight, src.child.conv.weight)


def test_pretrained_missing_file_and_bad_type(tmp_path):
    with pytest.raises(FileNotFoundError):
        Tiny(init_cfg=dict(type="Pretrained", checkpoint=str(tmp_path / "nope.pth"))).init_weights()
    with pytest.raises(ValueError, match="init_cfg"):
        Tiny(init_cfg=dict(type="Magic")).init_weights()


def test_forward_dispatch():
    m = Tiny()
    assert m(None)["mode"] == "train"
    assert m(None, return_loss=False)["mode"] == "test"
    m.eval()
    assert m(None)["mode"] == "test"
    assert m(None, return_loss=True)["mode"] == "train"


def test_build_model_calls_init_weights_and_keeps_cfg():
    @MODELS.register_module(force=True)
    class _BuildProbe(Tiny):
        pass

    cfg = dict(type="_BuildProbe", init_cfg=dict(type="Constant", layer="Conv2d", val=0.25))
    m = build_model(cfg)
    assert torch.all(m.conv.weight == 0.25)
    assert cfg == dict(type="_BuildProbe", init_cfg=dict(type="Constant", layer="Conv2d", val=0.25))


def test_build_model_accepts_plain_modules_without_train_cfg():
    @MODELS.register_module(force=True)
    class _PlainProbe(nn.Module):
        def __init__(self, width=2):
            super().__init__()
            self.fc = nn.Linear(width, width)

    assert isinstance(build_model(dict(type="_PlainProbe", width=3)).fc, nn.Linear)
