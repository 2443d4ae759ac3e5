"""``Exporter.export`` never destroys what exists: not the checkpoint it reads, not an earlier good ONNX file
(a failed export or check leaves it as it was, and no temporary file), and a wrong example shape is named."""
from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from antgo.engine.checkpoint import save_checkpoint
from antgo.engine.exporter import ExportError, Exporter, sha256_of
from antgo.models import build_model
from antgo.predict.metadata import read_metadata
from antgo.registry import MODELS


@MODELS.register_module(force=True)
class ExportSafetyNet(nn.Module):
    """A 3-channel conv net; ``mode='raise_in_export'`` makes torch.onnx.export fail."""

    def __init__(self, mode: str = "ok") -> None:
        super().__init__()
        self.mode = mode
        self.conv = nn.Conv2d(3, 2, 3, padding=1)

    def onnx_export(self, image: torch.Tensor) -> torch.Tensor:
        out = self.conv(image)
        if self.mode == "raise_in_export" and torch.onnx.is_in_onnx_export():
            raise RuntimeError("an op the exporter cannot convert")
        return out


EXPORT = dict(input_shape_list=[[1, 3, 16, 16]], input_name_list=["image"], output_name_list=["scores"])


def _cfg(mode: str = "ok", **export) -> dict:
    return dict(model=dict(type="ExportSafetyNet", mode=mode), export=dict(EXPORT, **export))


@pytest.fixture()
def ckpt(tmp_path):
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "work" / "best.pth", build_model(dict(type="ExportSafetyNet")))


def test_export_refuses_to_overwrite_the_checkpoint_it_reads(tmp_path, ckpt):
    before = sha256_of(ckpt)
    with pytest.raises(ExportError, match=r"best\.pth is the checkpoint being exported.*another output path"):
        Exporter(_cfg(), tmp_path / "work").export(checkpoint=ckpt, path=ckpt)
    link = tmp_path / "work" / "best.onnx"  # the same file through a link, with the right suffix
    link.symlink_to(ckpt)
    with pytest.raises(ExportError, match=r"best\.onnx is the checkpoint being exported"):
        Exporter(_cfg(), tmp_path / "work").export(checkpoint=ckpt, path=str(link))
    assert sha256_of(ckpt) == before


def test_export_refuses_a_path_not_ending_in_onnx(tmp_path, ckpt):
    target = tmp_path / "work" / "model.pth"
    with pytest.raises(ExportError, match=r"model\.pth does not end in \.onnx.*e\.g\. .*model\.onnx"):
        Exporter(_cfg(), tmp_path / "work").export(checkpoint=ckpt, path=str(target))
    assert not target.exists()


@pytest.mark.parametrize("cfg, error, match", [
    (_cfg("raise_in_export"), ExportError, "torch.onnx.export .* failed for .*model.onnx"),
    (_cfg(metadata=dict(tags={"a"})), TypeError, "not JSON serializable"),  # fails after the export and check
])
def test_failed_export_keeps_the_earlier_file_and_leaves_no_temporary(tmp_path, ckpt, cfg, error, match):
    out = tmp_path / "out"
    path = Exporter(_cfg(), out).export(checkpoint=ckpt)
    assert read_metadata(path)["antgo_metadata"]  # metadata was written before the file took its place
    before = sorted(os.listdir(out)), sha256_of(path), (out / "export.json").read_text()
    with pytest.raises(error, match=match):
        Exporter(cfg, out).export(checkpoint=ckpt)
    assert (sorted(os.listdir(out)), sha256_of(path), (out / "export.json").read_text()) == before


def test_export_shape_of_three_dims_names_the_key_and_the_four_dims(tmp_path, ckpt):
    with pytest.raises(ExportError, match=r"export\.input_shape_list\[0\] is \[1, 3, 64\]: each shape must be 4 "
                                          r"positive ints \[batch, channels, height, width\] matching the training"):
        Exporter(_cfg(input_shape_list=[[1, 3, 64]]), tmp_path / "out").export(checkpoint=ckpt)
    assert not (tmp_path / "out").exists()


def test_export_shape_the_model_cannot_take_names_the_key_and_the_channels(tmp_path, ckpt):
    with pytest.raises(ExportError, match=r"export\.input_shape_list \[\[1, 1, 16, 16\]\].*\[batch, channels, "
                                          r"height, width\].*first convolution takes 3 channels") as info:
        Exporter(_cfg(input_shape_list=[[1, 1, 16, 16]]), tmp_path / "out").export(checkpoint=ckpt)
    assert isinstance(info.value.__cause__, RuntimeError)
