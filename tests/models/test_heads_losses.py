"""Heads and CrossEntropyLoss: ignore handling, class weights, auxiliary loss."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from antgo.models import CrossEntropyLoss, DDRHead, LinearClsHead, SimpleHead


def manual_ce(logits, labels, ignore=255):
    logp = F.log_softmax(logits, dim=1)
    valid = labels != ignore
    picked = logp.permute(0, 2, 3, 1)[valid]          # (N, C)
    return -picked[torch.arange(picked.shape[0]), labels[valid]].mean()


def test_simple_head_forward_and_simple_test():
    head = SimpleHead(in_channels=8, channels=8, out_channels=3)
    feats = [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 8, 8)]
    assert head(feats).shape == (2, 3, 8, 8)
    probs = head.simple_test(feats)
    assert torch.allclose(probs.sum(1), torch.ones(2, 8, 8), atol=1e-6)


def test_simple_head_loss_ignores_255():
    torch.manual_seed(0)
    head = SimpleHead(in_channels=4, channels=4, out_channels=3, ignore_index=255)
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 1, 8, 8))
    labels[0, 0, :3] = 255
    loss = head.loss(logits, labels)["loss_seg"]
    up = F.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)
    assert loss.item() == pytest.approx(manual_ce(up, labels[:, 0]).item(), rel=1e-5)


def test_all_ignored_gives_zero_loss_with_finite_grad():
    head = SimpleHead(in_channels=4, channels=4, out_channels=3, ignore_index=255)
    feats = [torch.randn(1, 4, 4, 4)]
    loss = head.loss(head(feats), torch.full((1, 1, 8, 8), 255))["loss_seg"]
    assert loss.item() == 0.0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)


def test_class_weight_matches_torch():
    logits = torch.randn(2, 3, 5, 5)
    labels = torch.randint(0, 3, (2, 5, 5))
    labels[0, 0] = 255
    w = [1.0, 2.0, 0.5]
    ours = CrossEntropyLoss(ignore_index=255, class_weight=w)(logits, labels)
    ref = F.cross_entropy(logits, labels, weight=torch.tensor(w), ignore_index=255)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)


def test_avg_over_all_pixels_when_asked():
    logits = torch.randn(1, 3, 4, 4)
    labels = torch.randint(0, 3, (1, 4, 4))
    labels[0, 0] = 255
    per = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    loss = CrossEntropyLoss(ignore_index=255, avg_non_ignore=False)(logits, labels)
    assert loss.item() == pytest.approx(per.mean().item(), rel=1e-5)


def test_sigmoid_mode_and_loss_weight():
    logits = torch.randn(4, 1)
    target = torch.randint(0, 2, (4, 1))
    loss = CrossEntropyLoss(use_sigmoid=True, loss_weight=2.0)(logits, target)
    ref = 2.0 * F.binary_cross_entropy_with_logits(logits, target.float())
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)


def test_loss_decode_list_keeps_every_loss():
    head = SimpleHead(in_channels=4, channels=4, out_channels=3, ignore_index=255,
                      loss_decode=[dict(type="CrossEntropyLoss"), dict(type="CrossEntropyLoss", loss_weight=0.5)])
    out = head.loss(torch.randn(1, 3, 4, 4), torch.randint(0, 3, (1, 4, 4)))
    assert set(out) == {"loss_seg", "loss_seg_1"}
    assert out["loss_seg_1"].item() == pytest.approx(0.5 * out["loss_seg"].item(), rel=1e-5)


def test_ddr_head_aux_only_in_training():
    head = DDRHead(in_channels=16, channels=8, out_channels=3, aux_in_channels=8)
    feats = [torch.randn(2, 8, 8, 8), torch.randn(2, 16, 8, 8)]
    labels = torch.randint(0, 3, (2, 1, 32, 32))
    train_out = head(feats)
    assert isinstance(train_out, tuple)
    losses = head.loss(train_out, labels)
    assert set(losses) == {"loss_seg", "loss_seg_aux"}
    aux_plain = head.loss(train_out[1], labels)["loss_seg"]
    assert losses["loss_seg_aux"].item() == pytest.approx(0.4 * aux_plain.item(), rel=1e-5)
    head.eval()
    assert head(feats).shape == (2, 3, 8, 8)
    assert set(head.loss(head(feats), labels)) == {"loss_seg"}


def test_linear_cls_head():
    head = LinearClsHead(in_channels=8, num_classes=4)
    logits = head([torch.randn(3, 8, 2, 2)])
    out = head.loss(logits, torch.tensor([[0], [1], [2]]))
    assert set(out) == {"loss_cls", "acc"} and 0.0 <= out["acc"].item() <= 1.0
    assert head.simple_test(torch.randn(3, 8)).shape == (3, 4)
