"""ONNX export (TorchScript exporter, dynamic batch) and onnxruntime parity."""
from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from antgo.models import build_model


class ExportWrapper(torch.nn.Module):
    """What the exporter traces: ``model.onnx_export(image)``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.onnx_export(image)


def export_and_compare(cfg: dict, size: int, opset: int = 17) -> list[float]:
    torch.manual_seed(0)
    model = build_model(cfg)
    # give BN non-trivial running statistics so eval mode differs from the identity
    model.train()
    with torch.no_grad():
        model(image=torch.randn(2, 3, size, size), return_loss=False)
    wrapper = ExportWrapper(model).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (torch.randn(1, 3, size, size),), buf, dynamo=False, opset_version=opset,
                          input_names=["image"], output_names=["heatmap"],
                          dynamic_axes={"image": {0: "batch"}, "heatmap": {0: "batch"}})
    onnx.checker.check_model(onnx.load_from_string(buf.getvalue()))
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    diffs = []
    for batch in (1, 2):
        x = torch.randn(batch, 3, size, size)
        with torch.no_grad():
            ref = wrapper(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.shape == ref.shape
        diffs.append(float(np.abs(got - ref).max()))
    return diffs


@pytest.mark.parametrize("opset", [12, 17])
def test_ddrketnetf_simplehead_onnx_parity(opset):
    cfg = dict(type="EncoderDecoder", backbone=dict(type="DDRKetNetF", in_channels=3),
               decode_head=dict(type="SimpleHead", in_channels=32, channels=32, out_channels=21, ignore_index=255))
    assert max(export_and_compare(cfg, 64, opset)) < 1e-4


def test_ddrnet23slim_onnx_parity():
    cfg = dict(type="EncoderDecoder", backbone=dict(type="DDRNet23Slim"),
               decode_head=dict(type="DDRHead", out_channels=21, ignore_index=255))
    assert max(export_and_compare(cfg, 64)) < 1e-4


def test_classifier_onnx_parity():
    cfg = dict(type="ImageClassifier", backbone=dict(type="SimpleConvNet"),
               head=dict(type="LinearClsHead", in_channels=64, num_classes=10))
    assert max(export_and_compare(cfg, 32)) < 1e-4
