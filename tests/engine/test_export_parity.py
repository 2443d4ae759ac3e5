"""Exporter (dynamic batch, onnx.checker, onnxruntime) and verify_parity on real data and a real model."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from antgo.engine.checkpoint import save_checkpoint
from antgo.engine.exporter import ExportError, Exporter, sha256_of
from antgo.engine.parity import ParityError, verify_parity
from antgo.models import build_model
from antgo.registry import MODELS


@MODELS.register_module(force=True)
class TinyExportNet(nn.Module):
    """A conv net whose onnx_export returns softmax probabilities at 1/2 resolution."""

    deployed = 0

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.cls = nn.Conv2d(8, classes, 1)

    def switch_to_deploy(self) -> None:
        TinyExportNet.deployed += 1

    def onnx_export(self, image: torch.Tensor) -> torch.Tensor:
        return self.cls(torch.relu(self.bn(self.conv(image)))).softmax(1)


TINY = dict(type="TinyExportNet", classes=3)
EXPORT = dict(input_shape_list=[[1, 3, 32, 32]], input_name_list=["image"], output_name_list=["heatmap"])


@pytest.fixture()
def tiny_ckpt(tmp_path):
    torch.manual_seed(0)
    model = build_model(TINY)
    with torch.no_grad():  # non-trivial BN statistics, so eval-mode folding matters
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    return model, save_checkpoint(tmp_path / "best.pth", model)


def test_export_dynamic_batch_checker_and_onnxruntime(tmp_path, tiny_ckpt):
    model, ckpt = tiny_ckpt
    before = TinyExportNet.deployed
    path = Exporter(dict(model=TINY, export=EXPORT), work_dir=tmp_path / "out").export(checkpoint=ckpt)
    assert path == str(tmp_path / "out" / "model.onnx")
    assert TinyExportNet.deployed == before + 1
    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    assert [i.name for i in proto.graph.input] == ["image"] and [o.name for o in proto.graph.output] == ["heatmap"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    model.eval()
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
        (got,) = session.run(None, {"image": x})
        with torch.no_grad():
            ref = model.onnx_export(torch.from_numpy(x)).numpy()
        assert got.shape == (batch, 3, 16, 16)
        np.testing.assert_allclose(got, ref, atol=1e-5)
    info = json.loads((tmp_path / "out" / "export.json").read_text())
    assert info["inputs"] == [{"name": "image", "shape": ["batch", 3, 32, 32], "example_shape": [1, 3, 32, 32]}]
    assert info["outputs"][0]["shape"] == ["batch", 3, 16, 16]
    assert (info["opset_version"], info["exporter"]) == (17, "torchscript")
    assert info["sha256"] == sha256_of(path) and info["checkpoint"] == str(ckpt)


def test_export_with_dynamo_is_one_file(tmp_path, tiny_ckpt):
    model, ckpt = tiny_ckpt
    cfg = dict(model=TINY, export=dict(EXPORT, dynamo=True, name="tiny"), checkpoint=str(ckpt))
    path = Exporter(cfg, work_dir=tmp_path).export()  # checkpoint taken from cfg.checkpoint
    assert path.endswith("tiny.onnx") and not list(tmp_path.glob("*.data"))
    onnx.checker.check_model(onnx.load(path))
    x = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    (got,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"image": x})
    with torch.no_grad():
        np.testing.assert_allclose(got, model.eval().onnx_export(torch.from_numpy(x)).numpy(), atol=1e-5)
    assert json.loads((tmp_path / "export.json").read_text())["exporter"] == "dynamo"


@pytest.mark.parametrize("export, match", [
    (None, r"no 'export' dict.*input_shape_list"),
    (dict(EXPORT, input_name_list=["a", "b"]), r"export\.input_name_list.*same length"),
    (dict(EXPORT, input_shape_list=[[1, 3, "x", 32]]), r"export\.input_shape_list"),
    (dict(EXPORT, output_name_list=["a", "b"]), r"export\.output_name_list has 2 name"),
    (dict(EXPORT, dynamic=True), r"export\.dynamic is not a known export key"),
])
def test_export_config_errors(tmp_path, tiny_ckpt, export, match):
    cfg = dict(model=TINY) if export is None else dict(model=TINY, export=export)
    with pytest.raises(ExportError, match=match):
        Exporter(cfg, work_dir=tmp_path).export(checkpoint=tiny_ckpt[1])


def test_export_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(ExportError, match="no checkpoint"):
        Exporter(dict(model=TINY, export=EXPORT), work_dir=tmp_path).export()


# ---- parity on the real segmentor and generated VOC data --------------------------------------------------

SEG_MODEL = dict(type="EncoderDecoder", backbone=dict(type="DDRKetNetF", in_channels=3),
                 decode_head=dict(type="SimpleHead", in_channels=32, channels=32, out_channels=21, ignore_index=255))


@pytest.fixture(scope="module")
def seg_setup(tmp_path_factory):
    from antgo.data.datasets.synthetic import make_voc_tree

    tmp = tmp_path_factory.mktemp("parity")
    root = make_voc_tree(tmp / "voc", splits={"train": 1, "val": 10}, seed=3)
    test = dict(type="Pascal2012", train_or_test="val", dir=str(root), ext_params=dict(task_type="SEGMENTATION"),
                pipeline=[dict(type="ResizeS", target_dim=(64, 64)), dict(type="ToTensor", keys=["image"]),
                          dict(type="Normalize", mean=(0.49, 0.48, 0.45), std=(0.25, 0.24, 0.26), keys=["image"]),
                          dict(type="UnSqueeze", axis=0, keys=["segments"])],
                inputs_def=dict(fields=["image", "segments"]))
    cfg = dict(model=SEG_MODEL, data=dict(test=test), evaluation=dict(metric=dict(type="SegMIOU", class_num=21)),
               export=dict(input_shape_list=[[1, 3, 64, 64]], input_name_list=["image"],
                           output_name_list=["heatmap"]), parity=dict(num_samples=8, batch_size=3))
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp / "best.pth", build_model(SEG_MODEL))
    onnx_path = Exporter(cfg, work_dir=tmp / "export").export(checkpoint=ckpt)
    return cfg, ckpt, onnx_path, tmp


def test_parity_passes_on_real_model_and_data(seg_setup):
    cfg, ckpt, onnx_path, tmp = seg_setup
    report = verify_parity(cfg, onnx_path)  # checkpoint found through export.json
    assert report["passed"] and report["failures"] == []
    assert report["checkpoint"] == str(ckpt) and report["data"] == "data.test"
    assert report["num_samples"] == 8 and report["batch_sizes"] == [1, 3, 3, 1]
    out = report["outputs"]["heatmap"]
    assert out["shape"] == ["batch", 21, 16, 16]
    assert 0 <= out["max_abs_diff"] < 1e-4 and out["mean_abs_diff"] <= out["max_abs_diff"]
    assert out["argmax_agreement"] >= 0.999 and out["argmax_positions"] == 8 * 16 * 16
    assert out["max_rel_error"] >= 0
    assert "SegMIOU.miou" in report["metrics"]["torch"] and report["metrics"]["max_diff"] <= 1e-3
    saved = json.loads((tmp / "export" / "parity.json").read_text())
    assert saved["passed"] is True and saved["thresholds"]["max_abs_diff"] == 1e-3


def _perturb(src: str, dst: str, scale: float = 0.5) -> None:
    proto = onnx.load(src)
    init = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)) if t.data_type == 1 else -1)
    weights = numpy_helper.to_array(init)
    noisy = weights + np.random.default_rng(0).normal(0, scale, weights.shape).astype(weights.dtype)
    init.CopyFrom(numpy_helper.from_array(noisy, init.name))
    onnx.save(proto, dst)


def test_parity_fails_loudly_on_perturbed_weights(seg_setup, tmp_path):
    cfg, ckpt, onnx_path, _ = seg_setup
    bad = str(tmp_path / "perturbed.onnx")
    _perturb(onnx_path, bad)
    with pytest.raises(ParityError) as err:
        verify_parity(cfg, bad, checkpoint=ckpt, work_dir=tmp_path / "rep", num_samples=4)
    report = err.value.report
    assert report["passed"] is False and report["num_samples"] == 4
    msg = str(err.value)
    measured = report["outputs"]["heatmap"]["max_abs_diff"]
    assert measured > 1e-3 and f"max_abs_diff {measured:.3g} > 0.001" in msg
    assert "mean_abs_diff" in msg and "perturbed.onnx" in msg
    assert json.loads((tmp_path / "rep" / "parity.json").read_text())["passed"] is False


def test_thresholds_come_from_config_then_argument(seg_setup, tmp_path):
    cfg, ckpt, onnx_path, _ = seg_setup
    bad = str(tmp_path / "perturbed.onnx")
    _perturb(onnx_path, bad, scale=0.05)
    lenient = dict(max_abs_diff=10.0, mean_abs_diff=10.0, min_argmax_agreement=0.0, max_metric_diff=10.0)
    assert verify_parity(dict(cfg, parity=dict(lenient, num_samples=2)), bad, checkpoint=ckpt)["passed"]
    with pytest.raises(ParityError, match="max_abs_diff"):  # the argument wins over cfg.parity
        verify_parity(dict(cfg, parity=dict(lenient, num_samples=2)), bad, checkpoint=ckpt,
                      thresholds=dict(max_abs_diff=1e-9))
    with pytest.raises(ValueError, match=r"parity\.max_diff"):
        verify_parity(dict(cfg, parity=dict(max_diff=1.0)), onnx_path, checkpoint=ckpt)
