"""build_optimizer: types by name, kwargs checks, no-weight-decay groups."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from antgo.engine.optim import OptimizerConfigError, build_optimizer
from antgo.registry import OPTIMIZERS, RegistryError


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 1)  # has a bias
        self.gn = nn.GroupNorm(2, 4)
        self.ln = nn.LayerNorm(4)
        self.inorm = nn.InstanceNorm2d(4, affine=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.ln(self.inorm(self.gn(self.conv2(self.bn(self.conv(x))))).mean((2, 3))))


def _ids(params):
    return {id(p) for p in params}


def test_sgd_nesterov_from_seed_config():
    model = Tiny()
    cfg = dict(type="SGD", lr=0.05, weight_decay=5e-4, momentum=0.9, nesterov=True)
    opt = build_optimizer(model, cfg)
    assert isinstance(opt, torch.optim.SGD)
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.05, 0.9, True, 5e-4)
    assert _ids(group["params"]) == _ids(model.parameters())
    assert cfg == dict(type="SGD", lr=0.05, weight_decay=5e-4, momentum=0.9, nesterov=True)


@pytest.mark.parametrize("name, cls", [("Adam", torch.optim.Adam), ("AdamW", torch.optim.AdamW),
                                       ("RMSprop", torch.optim.RMSprop)])
def test_any_torch_optimizer_by_name(name, cls):
    opt = build_optimizer(Tiny(), dict(type=name, lr=1e-3, betas=(0.9, 0.99)) if "Adam" in name
                          else dict(type=name, lr=1e-3))
    assert type(opt) is cls
    assert opt.param_groups[0]["lr"] == 1e-3


def test_registered_optimizer():
    @OPTIMIZERS.register_module(force=True)
    class MySGD(torch.optim.SGD):
        pass

    assert type(build_optimizer(Tiny(), dict(type="MySGD", lr=0.1))) is MySGD


@pytest.mark.parametrize("switch", [
    dict(paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0)),
    dict(no_weight_decay_on_norm_and_bias=True),
])
def test_no_decay_group_holds_exactly_norm_and_bias(switch):
    model = Tiny()
    cfg = dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=1e-4, **switch)
    opt = build_optimizer(model, cfg)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"decay", "no_decay"}
    norm_and_bias = [model.bn.weight, model.bn.bias, model.gn.weight, model.gn.bias, model.ln.weight,
                     model.ln.bias, model.inorm.weight, model.inorm.bias, model.conv2.bias, model.fc.bias]
    assert _ids(groups["no_decay"]["params"]) == _ids(norm_and_bias)
    assert _ids(groups["decay"]["params"]) == _ids([model.conv.weight, model.conv2.weight, model.fc.weight])
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["decay"]["weight_decay"] == 1e-4
    assert "paramwise_cfg" in cfg or "no_weight_decay_on_norm_and_bias" in cfg  # not popped from the caller's dict


def test_partial_mults_and_adamw_default_decay():
    model = Tiny()
    opt = build_optimizer(model, dict(type="AdamW", lr=1e-3, paramwise_cfg=dict(norm_decay_mult=0.0)))
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["decay"]["weight_decay"] == pytest.approx(0.01)  # AdamW's own default
    assert id(model.conv2.bias) in _ids(groups["decay"]["params"])  # no bias_decay_mult: biases keep decay
    assert id(model.bn.bias) in _ids(groups["no_decay"]["params"])


def test_unknown_type_suggests_close_matches():
    with pytest.raises(RegistryError, match="Did you mean: 'Adam'"):
        build_optimizer(Tiny(), dict(type="AdamX", lr=0.1))
    with pytest.raises(RegistryError, match="Did you mean: 'SGD'"):
        build_optimizer(Tiny(), dict(type="sgd", lr=0.1))


@pytest.mark.parametrize("cfg, where", [
    (dict(type="SGD", lr=0.1, momentom=0.9), r"optimizer\.momentom.*momentum"),
    (dict(type="SGD", lr=0.1, paramwise_cfg=dict(bias_lr_mult=2.0)), r"optimizer\.paramwise_cfg\.bias_lr_mult"),
    (dict(type="SGD", lr=-1.0), r"optimizer.*SGD.*lr"),
    (dict(lr=0.1), r"optimizer has no 'type'"),
    (dict(type="AdamW", lr="3e-3"), r"optimizer\.lr is the string '3e-3'.*write lr=3e-3 without quotes"),
])
def test_bad_kwargs_name_the_key(cfg, where):
    with pytest.raises(OptimizerConfigError, match=where):
        build_optimizer(Tiny(), cfg)


def test_ddp_like_wrapper_is_unwrapped():
    class Wrapper(nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    model = Tiny()
    opt = build_optimizer(Wrapper(model), dict(type="SGD", lr=0.1, no_weight_decay_on_norm_and_bias=True))
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
