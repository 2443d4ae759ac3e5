"""Backbone output shapes and parameter counts."""
from __future__ import annotations

import pytest
import torch

from antgo.models import DDRKetNetF, DDRNet23Slim, SimpleConvNet
from antgo.models.heads import DDRHead, SimpleHead


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_ddrketnetf_shape_and_params():
    model = DDRKetNetF(in_channels=3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    assert isinstance(out, list) and len(out) == 1
    assert out[0].shape == (2, 32, 16, 24)
    assert n_params(model) == pytest.approx(2_659_392, rel=0.01)
    head = SimpleHead(in_channels=32, channels=32, out_channels=21)
    assert n_params(head) == pytest.approx(9_973, rel=0.01)


def test_ddrketnetf_grayscale_and_bad_arch_and_bad_size():
    assert DDRKetNetF(in_channels=1).eval()(torch.randn(1, 1, 32, 32))[0].shape == (1, 32, 8, 8)
    with pytest.raises(KeyError, match="architecture"):
        DDRKetNetF(architecture="resnet50")
    with pytest.raises(ValueError, match="multiples of 32"):
        DDRKetNetF()(torch.randn(1, 3, 40, 40))


def test_expansion_is_not_shared_state():
    a = DDRKetNetF()
    b = DDRKetNetF()
    assert n_params(a) == n_params(b)
    assert a.layer1[0].conv1.out_channels == 96 and a.layer8[0].conv1.out_channels == 960


def test_ddrnet23slim_shapes_and_params():
    model = DDRNet23Slim(in_channels=3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert [o.shape for o in out] == [(2, 64, 8, 8), (2, 128, 8, 8)]
    head = DDRHead(in_channels=128, channels=64, out_channels=19)
    # the paper's 5.7 M: backbone + main head (the auxiliary head is dropped at inference)
    assert n_params(model) + n_params(head.head) == pytest.approx(5_695_923, rel=0.01)
    with torch.no_grad():
        odd = model(torch.randn(1, 3, 72, 100))
    assert odd[-1].shape == (1, 128, 9, 13)


def test_simple_convnet_shapes():
    out = SimpleConvNet(in_channels=3, channels=(8, 16))(torch.randn(2, 3, 32, 32))
    assert [o.shape for o in out] == [(2, 8, 16, 16), (2, 16, 8, 8)]
