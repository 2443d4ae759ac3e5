"""verify_parity on models and metrics written from the design document: a segmentor with the document's SegMIOU
(``keys()`` + ``__call__`` only), a keypoint model without ``onnx_postprocess``, and the shape-mismatch message."""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from antgo.engine.checkpoint import save_checkpoint
from antgo.engine.exporter import Exporter
from antgo.engine.parity import _Stats, verify_parity
from antgo.models import build_model
from antgo.registry import DATASETS, METRICS, MODELS, TRANSFORMS

SIZE = 32


@pytest.fixture
def document_samples(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The design document's EncoderDecoder and SegMIOU samples (``tests/compat/seed_plugins.py``, unchanged),
    registered for this test only."""
    for package in ("antgo.data", "antgo.metrics", "antgo.models"):  # built-ins registered before the copies
        importlib.import_module(package)
    for registry in (DATASETS, TRANSFORMS, MODELS, METRICS):
        monkeypatch.setattr(registry, "_modules", dict(registry._modules))
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "compat"))
    monkeypatch.delitem(sys.modules, "seed_plugins", raising=False)
    yield importlib.import_module("seed_plugins")
    sys.modules.pop("seed_plugins", None)


@MODELS.register_module(force=True)
class DocFormHeatmapNet(nn.Module):
    """Keypoints without onnx_postprocess: onnx_export gives heat maps, forward_test its own (B, K, 3) joints."""

    def __init__(self, joints: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, joints, 3, stride=2, padding=1)

    def onnx_export(self, image):
        return self.conv(image).sigmoid()

    def forward_test(self, image, **kwargs):
        heatmaps = self.onnx_export(image)
        b, k, h, w = heatmaps.shape
        score, index = heatmaps.reshape(b, k, -1).max(-1)
        xy = torch.stack([index % w, index // w], -1).float() * 2
        return {"pred_joints2d": torch.cat([xy, score[..., None]], -1)}


def _exported(cfg: dict, tmp_path: Path) -> tuple[str, str]:
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "best.pth", build_model(cfg["model"]))
    return Exporter(cfg, work_dir=tmp_path).export(checkpoint=checkpoint), checkpoint


def _export_cfg(output: str) -> dict:
    return dict(input_shape_list=[[1, 3, SIZE, SIZE]], input_name_list=["image"], output_name_list=[output])


def test_document_segmentor_and_segmiou_pass_parity(document_samples, tmp_path: Path) -> None:
    from antgo.data.datasets.synthetic import make_voc_tree

    assert not hasattr(METRICS.get("SegMIOU"), "reset")  # the document's: keys() and __call__ only
    root = make_voc_tree(tmp_path / "voc", splits={"val": 3}, seed=3)
    test = dict(type="Pascal2012", train_or_test="val", dir=str(root), ext_params=dict(task_type="SEGMENTATION"),
                pipeline=[dict(type="ResizeS", target_dim=(SIZE, SIZE)), dict(type="ToTensor", keys=["image"]),
                          dict(type="UnSqueeze", axis=0, keys=["segments"])],
                inputs_def=dict(fields=["image", "segments"]))
    model = dict(type="EncoderDecoder", backbone=dict(type="SimpleConvNet", in_channels=3, channels=(8, 16)),
                 decode_head=dict(type="SimpleHead", in_channels=16, channels=16, out_channels=21, ignore_index=255))
    cfg = dict(model=model, data=dict(test=test), evaluation=dict(metric=dict(type="SegMIOU", class_num=21)),
               export=_export_cfg("heatmap"),
               parity=dict(num_samples=3, batch_size=2))
    onnx_path, checkpoint = _exported(cfg, tmp_path)
    report = verify_parity(cfg, onnx_path, checkpoint)
    assert report["passed"], report["failures"]
    saved = json.loads(Path(report["report_file"]).read_text())["metrics"]
    assert 0.0 <= saved["torch"]["SegMIOU.miou"] <= 1.0
    assert saved["onnxruntime"]["SegMIOU.miou"] == pytest.approx(saved["torch"]["SegMIOU.miou"])
    assert saved["max_diff"] <= 1e-3 and report["predictions"]["pred_segments"]["pixel_agreement"] >= 0.999


def test_keypoint_heat_maps_without_post_process_are_compared_raw(tmp_path: Path) -> None:
    from antgo.data.datasets.synthetic_tasks import DEMO_MAKERS

    root = DEMO_MAKERS["kp"](tmp_path / "kp", counts={"val": 2})
    test = dict(type="COCO2017", train_or_test="val", dir=str(root), ext_params=dict(task_type="KEYPOINTS"),
                pipeline=[dict(type="ResizeS", target_dim=(SIZE, SIZE)), dict(type="ToTensor", keys=["image"])],
                inputs_def=dict(fields=["image", "joints2d", "bboxes"]))
    cfg = dict(model=dict(type="DocFormHeatmapNet"), data=dict(test=test),
               evaluation=dict(metric=dict(type="PCK", thr=0.1)), export=_export_cfg("heatmap"),
               parity=dict(num_samples=2, batch_size=2))
    onnx_path, checkpoint = _exported(cfg, tmp_path)
    report = verify_parity(cfg, onnx_path, checkpoint)  # not the heat maps' argmax taken for 'pred_joints2d'
    assert report["passed"], report["failures"]
    assert "outputs ((1, 5, 16, 16))" in report["metrics"]["skipped"] and report["metrics"]["torch"] == {}
    assert report["outputs"]["heatmap"]["max_abs_diff"] < 1e-5


def test_an_output_of_another_shape_names_the_file_and_the_fix() -> None:
    with pytest.raises(ValueError, match=r"output 'boxes' of /runs/x/model\.onnx has shape \(1, 4, 5\) in "
                                         r"onnxruntime but \(1, 3, 5\).*another config or checkpoint.*export it "
                                         r"again"):
        _Stats("boxes", "/runs/x/model.onnx").update(np.zeros((1, 3, 5)), np.zeros((1, 4, 5)))
