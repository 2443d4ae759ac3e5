"""Models written from the design document, without antgo's ``onnx_postprocess``: a detector whose
``forward_test`` returns ``{'box': (B, N, 5), 'label': (B, N)}`` goes through verify, ``antgo predict``, DetMAP
and the evaluate stage's figures; a classifier whose ``onnx_export`` returns softmax keeps its probabilities."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from antgo.engine.checkpoint import save_checkpoint
from antgo.engine.exporter import Exporter
from antgo.engine.parity import verify_parity
from antgo.models import CenterNet, build_model
from antgo.registry import MODELS

SIZE = 64
NUM_CLASSES = 4
PIPELINE = [dict(type="ResizeS", target_dim=(SIZE, SIZE)), dict(type="ToTensor", keys=["image"]),
            dict(type="Normalize", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), keys=["image"])]


@MODELS.register_module(force=True)
class DocFormBoxNet(nn.Module):
    """A detector as the design document describes one: forward_train, forward_test ({'box', 'label'}, the box's
    5th column the score) and onnx_export; no onnx_postprocess."""

    def __init__(self, num_boxes: int = 3, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.num_boxes, self.num_classes = num_boxes, num_classes
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, num_boxes * (5 + num_classes))

    def onnx_export(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.fc(torch.relu(self.conv(image)).mean((2, 3))).view(-1, self.num_boxes, 5 + self.num_classes)
        centre, half = raw[..., :2].sigmoid() * SIZE, raw[..., 2:4].sigmoid() * SIZE / 4
        return torch.cat([centre - half, centre + half, raw[..., 4:5].sigmoid()], -1), raw[..., 5:]

    def forward_train(self, image: torch.Tensor, bboxes, labels, **kwargs) -> dict[str, torch.Tensor]:
        return {"loss_box": self.onnx_export(image)[0].mean()}

    def forward_test(self, image: torch.Tensor, **kwargs) -> dict[str, torch.Tensor]:
        boxes, classes = self.onnx_export(image)
        return {"box": boxes, "label": classes.argmax(-1)}


@MODELS.register_module(force=True)
class DocFormBoxNetWrongPost(DocFormBoxNet):
    """The same detector with an onnx_postprocess that names its boxes differently from the metric."""

    def onnx_postprocess(self, outputs, image):
        return {"boxes": outputs[0], "label": outputs[1].argmax(-1)}


@MODELS.register_module(force=True)
class DocFormBoxNetPost(DocFormBoxNet):
    """The same detector with an onnx_postprocess returning the document's form."""

    def onnx_postprocess(self, outputs, image):
        return {"box": outputs[0], "label": outputs[1].argmax(-1)}


@MODELS.register_module(force=True)
class DocFormSoftmaxNet(nn.Module):
    """A classifier whose onnx_export already returns probabilities (and no onnx_postprocess)."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def onnx_export(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(image)).mean((2, 3))).softmax(1)

    def forward_test(self, image: torch.Tensor, **kwargs) -> dict[str, torch.Tensor]:
        return {"pred": self.onnx_export(image)}


@MODELS.register_module(force=True)
class DocFormCenterNet(CenterNet):
    """A subclass of the built-in detector: its outputs keep CenterNet's layout and decode."""


def _det_config(root: Path, model_type: str = "DocFormBoxNet") -> dict:
    test = dict(type="COCO2017", train_or_test="val", dir=str(root), ext_params=dict(task_type="DETECTION"),
                pipeline=PIPELINE, inputs_def=dict(fields=["image", "bboxes", "labels"]))
    return dict(model=dict(type=model_type), data=dict(test=test),
                evaluation=dict(metric=dict(type="DetMAP", class_num=NUM_CLASSES)),
                export=dict(input_shape_list=[[1, 3, SIZE, SIZE]], input_name_list=["image"],
                            output_name_list=["boxes", "classes"]),
                parity=dict(num_samples=3, batch_size=2))


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The document-form detector at random init (0 training steps) saved with save_checkpoint and exported."""
    from antgo.data.datasets.synthetic_tasks import DEMO_MAKERS

    tmp = tmp_path_factory.mktemp("doc_det")
    cfg = _det_config(DEMO_MAKERS["det"](tmp / "data", counts={"val": 3}))
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp / "best.pth", build_model(cfg["model"]))
    onnx_path = Exporter(cfg, work_dir=tmp / "export").export(checkpoint=checkpoint)
    return {"cfg": cfg, "checkpoint": checkpoint, "onnx": onnx_path, "tmp": tmp}


def test_verify_compares_the_raw_outputs_and_records_why_it_skipped_the_metric(detector) -> None:
    report = verify_parity(detector["cfg"], detector["onnx"], detector["checkpoint"])
    assert report["passed"], report["failures"]
    assert set(report["outputs"]) == {"boxes", "classes"} and report["outputs"]["boxes"]["max_abs_diff"] < 1e-4
    assert report["outputs"]["boxes"]["argmax_agreement"] is None  # no score map: no argmax check
    skipped = json.loads(Path(report["report_file"]).read_text())["metrics"]["skipped"]
    assert "DocFormBoxNet has no onnx_postprocess" in skipped and "define onnx_postprocess(outputs, image)" in skipped
    assert report["predictions"] == {} and report["metrics"]["max_diff"] is None


def test_a_post_process_of_the_document_form_compares_boxes_and_detmap(detector) -> None:
    cfg = _det_config(Path(detector["cfg"]["data"]["test"]["dir"]), "DocFormBoxNetPost")
    report = verify_parity(cfg, detector["onnx"], detector["checkpoint"], work_dir=detector["tmp"] / "post")
    assert report["passed"], report["failures"]
    boxes = report["predictions"]["box"]  # scores from the boxes' 5th column
    assert boxes["detections_per_image"] == 3 and boxes["box_match"] == 1.0 and boxes["max_score_diff"] < 1e-5
    assert "DetMAP.mAP" in report["metrics"]["torch"] and report["metrics"]["max_diff"] <= 1e-3


def test_a_post_process_without_the_metric_keys_is_an_error(detector) -> None:
    cfg = _det_config(Path(detector["cfg"]["data"]["test"]["dir"]), "DocFormBoxNetWrongPost")
    with pytest.raises(KeyError, match=r"onnx_postprocess returned \['boxes', 'label'\], but the metrics read "
                                       r"\['box'\].*return \['box'\] from onnx_postprocess"):
        verify_parity(cfg, detector["onnx"], detector["checkpoint"], work_dir=detector["tmp"] / "wrong")


def test_checkpoint_predict_runs_the_models_forward_test(detector, tmp_path: Path) -> None:
    from antgo.predict.processing import preprocess
    from antgo.predict.runner import CheckpointModel, read_image, run_predict

    model = CheckpointModel(detector["cfg"], detector["checkpoint"])
    assert "decode" not in model.meta and model.meta["model_type"] == "DocFormBoxNet"
    cv2.imwrite(str(tmp_path / "in.png"), np.random.default_rng(0).integers(0, 255, (48, 80, 3), np.uint8))
    (record,) = run_predict(model, tmp_path / "in.png", tmp_path / "out")
    with torch.no_grad():
        ref = model.model.forward_test(torch.from_numpy(preprocess(read_image(tmp_path / "in.png"), model.meta)))
    assert len(record["boxes"]) == len(record["scores"]) == len(record["labels"]) == 3
    np.testing.assert_allclose(record["scores"], ref["box"][0, :, 4].numpy(), atol=1e-5)
    assert all(0 <= b[0] <= b[2] and 0 <= b[1] <= b[3] for b in record["boxes"])
    assert (tmp_path / "out" / record["overlay"]).is_file()


def test_predict_with_the_onnx_file_alone_says_how_to_decode(detector) -> None:
    from antgo.predict.runner import OnnxModel, predict_image

    model = OnnxModel(detector["onnx"])
    with pytest.raises(ValueError, match=r"outputs of model DocFormBoxNet .* no known decode.*--checkpoint.*"
                                         r"export\.metadata"):
        predict_image(model, np.zeros((40, 40, 3), np.uint8))


def test_detmap_figures_and_overlays_of_the_document_form(detector, tmp_path: Path) -> None:
    from antgo.engine import Tester
    from antgo.predict.runner import CheckpointModel, overlay_samples
    from antgo.tracking.task_plots import task_plots

    tester = Tester(detector["cfg"], str(tmp_path), device="cpu")
    tester.config_model(detector["checkpoint"])
    results = tester.evaluate()
    assert {"mAP", "mAP_50", "AP_0"} <= set(results) and 0.0 <= results["mAP"] <= 1.0
    figures = task_plots(tester, tmp_path / "figures", num_vis=2)
    assert [folder for _, folder in figures].count("predictions") == 2  # box overlays with (N, 5) boxes
    for model_type in ("DocFormBoxNet", "DocFormBoxNetWrongPost"):  # the second's predictor would raise
        model = CheckpointModel(_det_config(Path(detector["cfg"]["data"]["test"]["dir"]), model_type),
                                detector["checkpoint"])
        assert overlay_samples(model, tester.reader.dataset, 2, tmp_path / "vis") == []


def test_the_evaluate_stage_overlays_never_fail(detector, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from flows.tasks import _overlays

    tester = SimpleNamespace(reader=SimpleNamespace(dataset=[]))
    assert _overlays(detector["cfg"], str(tmp_path / "missing.pth"), tester, 2, tmp_path / "vis", None) == []


def test_decode_rules_only_for_the_built_in_layouts() -> None:
    from antgo.predict.metadata import describe_model

    def meta(model_type: str, metric: dict) -> dict:
        cfg = dict(model=dict(type=model_type), evaluation=dict(metric=metric))
        return describe_model(cfg, ["image"], [[1, 3, SIZE, SIZE]], ["out"], [[1, 4, 16, 16]])

    assert meta("DocFormCenterNet", dict(type="DetMAP"))["decode"]["type"] == "centernet"
    assert meta("CenterNet", dict(type="DetMAP"))["decode"]["type"] == "centernet"
    custom = meta("DocFormBoxNet", dict(type="DetMAP"))
    assert "decode" not in custom and custom["output_meaning"] == "see the model's onnx_export"
    assert meta("ImageClassifier", dict(type="Accuracy"))["decode"]["output"] == "probabilities"
    assert meta("DocFormSoftmaxNet", dict(type="Accuracy"))["decode"]["output"] == "auto"


def test_a_classifier_exporting_softmax_keeps_its_probabilities(tmp_path: Path) -> None:
    from antgo.predict.decode import class_probabilities, decode_outputs
    from antgo.predict.processing import preprocess
    from antgo.predict.runner import OnnxModel

    cfg = dict(model=dict(type="DocFormSoftmaxNet"), evaluation=dict(metric=dict(type="Accuracy", topk=(1,))),
               export=dict(input_shape_list=[[1, 3, SIZE, SIZE]], input_name_list=["image"],
                           output_name_list=["probs"]))
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "cls.pth", build_model(cfg["model"]))
    model = OnnxModel(Exporter(cfg, work_dir=tmp_path).export(checkpoint=checkpoint))
    x = preprocess(np.random.default_rng(1).integers(0, 255, (50, 70, 3), np.uint8), model.meta)
    outputs = model(x)
    probs = decode_outputs(outputs, model.meta, x.shape[2:4])["probs"]
    np.testing.assert_allclose(probs, outputs[0][0], atol=1e-7)  # not softmaxed a second time
    mixed = np.array([[2.0, 0.0, -1.0, 0.5], [0.1, 0.2, 0.3, 0.5], [0.1, 0.2, 0.3, 0.4]])  # logits, logits, probs
    auto = class_probabilities(mixed, "auto")
    np.testing.assert_allclose(auto[:2], class_probabilities(mixed[:2], "logits"))
    np.testing.assert_allclose(auto[2], mixed[2])


def test_forward_test_forms_become_the_decoded_form() -> None:
    from antgo.predict.runner import CheckpointModel

    first = CheckpointModel._first_prediction
    joints = np.array([[[3.0, 4.0], [5.0, 6.0]]])  # (B, K, 2): score 1
    for form in (joints, torch.from_numpy(joints), [joints[0]]):
        np.testing.assert_array_equal(first({"pred_joints2d": form}, "keypoints", "m")["keypoints"],
                                      [[3, 4, 1], [5, 6, 1]])
    with_score = np.array([[[[3.0, 4.0, 0.5], [5.0, 6.0, 0.25]]]])  # (B, 1, K, 3)
    np.testing.assert_array_equal(first({"pred_joints2d": with_score}, "keypoints", "m")["keypoints"], with_score[0, 0])
    boxes = [torch.tensor([[0.0, 0, 4, 4], [1, 1, 5, 5]]), torch.zeros(0, 4)]  # per-sample lists, 'score' beside
    out = first({"box": boxes, "score": [torch.tensor([0.9, 0.2]), torch.zeros(0)],
                 "label": [torch.tensor([1, 0]), torch.zeros(0)]}, "detection", "m")
    np.testing.assert_array_equal(out["score"], np.float32([0.9, 0.2]))
    assert out["box"].shape == (2, 4) and list(out["label"]) == [1, 0]
    probs = first({"pred": torch.tensor([[2.0, 0.0], [0.3, 0.7]])}, "classification", "m")["probs"]
    np.testing.assert_allclose(probs, [1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(2.0))])  # logits get a softmax
    with pytest.raises(KeyError, match=r"m returned \['boxes'\]; detection predictions need \['box', 'label'\]"):
        first({"boxes": boxes}, "detection", "m")
    with pytest.raises(ValueError, match="no scores"):
        first({"box": boxes, "label": [torch.tensor([1, 0]), torch.zeros(0)]}, "detection", "m")
