"""``antgo predict`` never replaces or loses what exists: no output over a source image, one output name per
source, an unreadable image recorded (the others predicted, ``predictions.json`` written, then an error), and
clear messages for a missing source and a file that is no ONNX model. Real onnxruntime on a tiny export."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from antgo.predict.runner import InvalidOnnxModel, OnnxModel, PredictInputErrors, run_predict
from antgo.registry import MODELS


@MODELS.register_module(force=True)
class PredictOutputsNet(nn.Module):
    """Per-class scores at the input size: a 3-class segmentor in one convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def onnx_export(self, image: torch.Tensor) -> torch.Tensor:
        return self.conv(image)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    from antgo.engine.checkpoint import save_checkpoint
    from antgo.engine.exporter import Exporter
    from antgo.models import build_model

    root = tmp_path_factory.mktemp("predict_outputs")
    torch.manual_seed(0)
    ckpt = save_checkpoint(root / "best.pth", build_model(dict(type="PredictOutputsNet")))
    cfg = dict(model=dict(type="PredictOutputsNet"), evaluation=dict(metric=dict(type="SegMIOU", class_num=3)),
               export=dict(input_shape_list=[[1, 3, 16, 16]], input_name_list=["image"], output_name_list=["scores"]))
    return OnnxModel(Exporter(cfg, root).export(checkpoint=ckpt))


def _images(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (12, 20, 3), dtype=np.uint8))
    return folder


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_predict_into_the_source_folder_is_refused_before_anything_is_written(model, tmp_path):
    images = _images(tmp_path / "same", "a.png", "b.png")
    before = _digests(images)
    with pytest.raises(FileExistsError, match=r"would overwrite the source image .*a\.png with a\.png; pass "
                                              r"another --out-dir"):
        run_predict(model, images, images)
    (tmp_path / "link").symlink_to(images, target_is_directory=True)  # the same folder by another name
    with pytest.raises(FileExistsError, match="would overwrite the source image"):
        run_predict(model, images, tmp_path / "link")
    assert _digests(images) == before  # no overlay over a source, no predictions.json


def test_sources_sharing_a_stem_get_their_own_outputs(model, tmp_path):
    images = _images(tmp_path / "in", "a.jpg", "a.png", "b.png", "b_mask.png")
    records = run_predict(model, images, tmp_path / "out")
    assert [r["source"] for r in records] == ["a.jpg", "a.png", "b.png", "b_mask.png"]
    outputs = [name for r in records for name in (r["overlay"], r["mask"])]
    assert outputs == ["a_jpg.png", "a_jpg_mask.png", "a_png.png", "a_png_mask.png", "b.png", "b_mask.png",
                       "b_mask_2.png", "b_mask_2_mask.png"]  # b's mask file and b_mask's overlay would be one
    assert all((tmp_path / "out" / name).is_file() for name in outputs)


def test_an_unreadable_image_is_recorded_and_raised_after_the_others_are_written(model, tmp_path, caplog):
    images = _images(tmp_path / "in", "a.png", "c.png")
    (images / "b_zero.jpg").write_bytes(b"")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="antgo.predict.runner"), \
            pytest.raises(PredictInputErrors, match=r"1 of 3 input image\(s\) could not be read \(b_zero\.jpg: "
                                                    r"cannot decode image .*b_zero\.jpg") as info:
        run_predict(model, images, out)
    assert [r["source"] for r in info.value.failed] == ["b_zero.jpg"]
    assert any("b_zero.jpg" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    result = json.loads((out / "predictions.json").read_text())
    assert [(p["source"], "error" in p, "mask" in p) for p in result["predictions"]] == [
        ("a.png", False, True), ("b_zero.jpg", True, False), ("c.png", False, True)]
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "a_mask.png", "c.png", "c_mask.png",
                                                     "predictions.json"]  # no temporary file left


def test_the_cli_exits_1_after_writing_when_an_input_failed(model, tmp_path, capsys):
    from antgo.cli import main

    images = _images(tmp_path / "in", "a.png")
    (images / "zero.jpg").write_bytes(b"")
    assert main(["predict", str(images), "--onnx", model.path, "--out-dir", str(tmp_path / "out")]) == 1
    assert "PredictInputErrors: 1 of 2 input image(s) could not be read (zero.jpg" in capsys.readouterr().err
    assert len(json.loads((tmp_path / "out" / "predictions.json").read_text())["predictions"]) == 2


def test_a_single_unreadable_image_fails_at_once(model, tmp_path):
    (tmp_path / "zero.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"cannot decode image .*zero\.jpg") as info:
        run_predict(model, tmp_path / "zero.jpg", tmp_path / "out")
    assert not isinstance(info.value, PredictInputErrors)
    assert not (tmp_path / "out" / "predictions.json").exists()


def test_a_missing_source_does_not_exist_and_another_file_type_is_named(model, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"source .*nope\.png does not exist; pass an image \(\.jpg"):
        run_predict(model, tmp_path / "nope.png", tmp_path / "out")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match=r"notes\.txt is neither an image, a video nor a folder; pass an image "
                                         r"\(\.jpg, .*\), a video \(\.mp4"):
        run_predict(model, tmp_path / "notes.txt", tmp_path / "out")


def test_a_text_file_as_onnx_is_named_as_no_onnx_model(tmp_path):
    text = tmp_path / "model.onnx"
    text.write_text("this is a text file\n")
    with pytest.raises(InvalidOnnxModel, match=r"model\.onnx is not a valid ONNX model \(onnxruntime: .*\); "
                                               r"make one with `antgo export CONFIG --checkpoint") as info:
        OnnxModel(text)
    assert info.value.__cause__ is not None and "ONNXRuntimeError" in str(info.value.__cause__)
