"""The design document's import paths bind the core's objects, and its samples work as user plugins."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import antgo.registry as core_registry

HERE = Path(__file__).parent


def test_legacy_paths_are_the_core_objects():
    from antgo.data.dataset import Dataset as CoreDataset
    from antgo.data.reader import register as core_register
    from antgo.data.transforms import imnormalize as core_imnormalize
    from antgo.dataflow.dataset.dataset import Dataset
    from antgo.engine import Exporter as CoreExporter, Tester as CoreTester, Trainer as CoreTrainer
    from antgo.framework.helper import reader
    from antgo.framework.helper.dataset.builder import DATASETS, PIPELINES
    from antgo.framework.helper.dataset.pipelines import imnormalize
    from antgo.framework.helper.exporter import Exporter
    from antgo.framework.helper.models.builder import BACKBONES, HEADS, LOSSES, MODELS
    from antgo.framework.helper.runner import BaseModule
    from antgo.framework.helper.runner.builder import MEASURES
    from antgo.framework.helper.tester import Tester
    from antgo.framework.helper.trainer import Trainer
    from antgo.models.base import BaseModule as CoreBaseModule

    assert DATASETS is core_registry.DATASETS
    assert PIPELINES is core_registry.TRANSFORMS
    assert MODELS is HEADS is BACKBONES is LOSSES is core_registry.MODELS
    assert MEASURES is core_registry.METRICS
    assert reader.register is core_register
    assert Dataset is CoreDataset
    assert BaseModule is CoreBaseModule
    assert imnormalize is core_imnormalize
    assert (Trainer, Tester, Exporter) == (CoreTrainer, CoreTester, CoreExporter)


def test_runner_builder_star_import_gives_measures():
    namespace: dict = {}
    exec("from antgo.framework.helper.runner.builder import *", namespace)
    assert namespace["MEASURES"] is core_registry.METRICS


@pytest.fixture
def seed_plugins(monkeypatch, tmp_path):
    """Load the document's samples through a config's custom_imports; undo their registrations after."""
    from antgo.config import Config

    for registry in (core_registry.DATASETS, core_registry.TRANSFORMS, core_registry.MODELS, core_registry.METRICS):
        monkeypatch.setattr(registry, "_modules", dict(registry._modules))
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.delitem(sys.modules, "seed_plugins", raising=False)
    cfg_file = tmp_path / "plugins_cfg.py"
    cfg_file.write_text("custom_imports = dict(imports=['seed_plugins'])\nmax_epochs = 1\n")
    Config.fromfile(str(cfg_file))
    yield sys.modules["seed_plugins"]
    sys.modules.pop("seed_plugins", None)


def test_seed_dataset_sample_registers_under_its_own_name(seed_plugins):
    from antgo.data import build_dataset

    dataset = core_registry.DATASETS.build(dict(type="YourDataset", train_or_test="train", dir=None))
    assert type(dataset) is seed_plugins.YourDataset  # the decorated name still is the user's class
    assert dataset.size == 0
    reader = build_dataset(dict(type="YourDataset", train_or_test="train", pipeline=[], inputs_def=None))
    assert len(reader) == 0


def test_seed_inormalize_sample_in_a_pipeline(seed_plugins):
    transform = core_registry.TRANSFORMS.build(dict(type="INormalize", mean=(10, 20, 30), std=(2, 4, 5), to_rgb=True))
    image = np.zeros((4, 5, 3), np.uint8)
    image[..., 0], image[..., 2] = 40, 80  # BGR in, RGB out: channel 0 becomes 80
    out = transform({"image": image, "image_meta": {}})
    assert out["image"].dtype == np.float32
    np.testing.assert_allclose(out["image"][0, 0], [(80 - 10) / 2, (0 - 20) / 4, (40 - 30) / 5])
    assert out["image_meta"]["img_norm_cfg"]["to_rgb"] is True


def test_seed_encoder_decoder_and_segmiou_samples(seed_plugins):
    from antgo.models import build_model

    model = build_model(dict(
        type="EncoderDecoder",
        backbone=dict(type="DDRKetNetF", in_channels=3),
        decode_head=dict(type="SimpleHead", in_channels=32, channels=32, out_channels=21, ignore_index=255),
    ))
    assert type(model) is seed_plugins.EncoderDecoder
    image = torch.randn(2, 3, 64, 64)
    segments = torch.randint(0, 21, (2, 1, 64, 64), dtype=torch.uint8)
    segments[:, :, :4] = 255
    losses = model.forward_train(image, segments)
    assert set(losses) == {"loss_seg"} and torch.isfinite(losses["loss_seg"])
    model.eval()
    with torch.no_grad():
        pred = model.forward_test(image)["pred_segments"]
        heatmap = model.onnx_export(image)
    assert pred.shape == (2, 64, 64)
    assert heatmap.shape == (2, 21, 16, 16)

    measure = core_registry.METRICS.build(dict(type="SegMIOU", class_num=3))
    assert type(measure) is seed_plugins.SegMIOU
    gt = np.array([[0, 1, 2, 255]])
    pr = np.array([[0, 1, 1, 2]])
    result = measure([{"pred_segments": pr}], [{"segments": gt}])
    assert result["miou"] == pytest.approx((1 + 0.5 + 0) / 3)


def test_import_antgo_does_not_pull_in_the_pipeline_stack():
    code = textwrap.dedent("""
        import sys
        import antgo, antgo.engine, antgo.framework.helper
        print(",".join(m for m in ("prefect", "mlflow") if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
