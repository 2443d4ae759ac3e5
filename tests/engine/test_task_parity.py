"""Export + parity for the detection, keypoint and classification demos' models on generated data: parity
passes on the exported graph and fails, naming the numbers, on a perturbed copy."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from antgo.engine.checkpoint import save_checkpoint
from antgo.engine.exporter import Exporter
from antgo.engine.parity import ParityError, verify_parity
from antgo.models import build_model

SIZE = 64
BACKBONE = dict(type="SimpleConvNet", in_channels=3, channels=(8, 16, 32))
PIPELINE = [dict(type="ResizeS", target_dim=(SIZE, SIZE)), dict(type="ToTensor", keys=["image"]),
            dict(type="Normalize", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), keys=["image"])]
TASKS = {
    "det": dict(
        model=dict(type="CenterNet", backbone=BACKBONE, test_cfg=dict(score_thr=0.05),
                   head=dict(type="CenterNetHead", in_channels=[16, 32], in_index=[1, 2], num_classes=4, channels=16)),
        reader=dict(type="COCO2017", ext_params=dict(task_type="DETECTION")),
        fields=["image", "bboxes", "labels", "iscrowd"],
        metric=dict(type="DetMAP", class_num=4, ignore_key="iscrowd"), outputs=["heatmap", "wh", "offset"],
        expect=("predictions 'box'", "output 'heatmap'")),
    "kp": dict(
        model=dict(type="HeatmapPose", backbone=BACKBONE,
                   head=dict(type="HeatmapHead", in_channels=32, num_joints=5, channels=16, num_deconv=1)),
        reader=dict(type="COCO2017", ext_params=dict(task_type="KEYPOINTS")),
        fields=["image", "joints2d", "bboxes"], metric=[dict(type="PCK", thr=0.1), dict(type="KeypointAP")],
        outputs=["heatmap"], expect=("predictions 'pred_joints2d'", "max_keypoint_dist_px")),
    "cls": dict(
        model=dict(type="ImageClassifier", backbone=BACKBONE, head=dict(type="LinearClsHead", in_channels=32,
                                                                        num_classes=4)),
        reader=dict(type="ImageFolder"), fields=["image", "label"], metric=dict(type="Accuracy", topk=(1, 2)),
        outputs=["probs"], expect=("predictions 'pred'", "class_agreement")),
}


@pytest.fixture(scope="module")
def demo_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from antgo.data.datasets.synthetic_tasks import DEMO_MAKERS

    root = tmp_path_factory.mktemp("task_demos")
    return {task: DEMO_MAKERS[task](root / task, counts={"train": 4, "val": 8}) for task in TASKS}


def _config(task: str, root: Path) -> dict:
    spec = TASKS[task]
    split = dict(spec["reader"], train_or_test="val", dir=str(root), pipeline=PIPELINE,
                 inputs_def=dict(fields=spec["fields"]))
    return dict(model=spec["model"], data=dict(test=split), evaluation=dict(metric=spec["metric"]),
                export=dict(input_shape_list=[[1, 3, SIZE, SIZE]], input_name_list=["image"],
                            output_name_list=spec["outputs"]),
                parity=dict(num_samples=8, batch_size=4))


def _perturb(path: str, out: Path) -> Path:
    """Add noise to the weights and bias of the convolution (or Gemm) that the first graph output comes from,
    so the predictions move (a bias shift alone would leave heat-map peaks in place)."""
    proto = onnx.load(path)
    inits = {i.name: i for i in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    node = producer[proto.graph.output[0].name]
    while node.op_type not in ("Conv", "Gemm"):  # walk back through Sigmoid / Softmax
        node = producer[node.input[0]]
    rng = np.random.default_rng(0)
    for name in node.input[1:3]:  # weights and bias
        values = numpy_helper.to_array(inits[name]).copy()
        values += rng.normal(0, max(3 * float(values.std()), 1.0), values.shape).astype(values.dtype)
        inits[name].CopyFrom(numpy_helper.from_array(values, name))
    onnx.save(proto, str(out))
    return out


@pytest.mark.parametrize("task", list(TASKS))
def test_parity_passes_then_fails_on_a_perturbed_graph(task: str, demo_roots, tmp_path: Path) -> None:
    cfg = _config(task, demo_roots[task])
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "best.pth", build_model(cfg["model"]))
    onnx_path = Exporter(cfg, work_dir=tmp_path).export(checkpoint=checkpoint)
    report = verify_parity(cfg, onnx_path, checkpoint)
    assert report["passed"], report["failures"]
    pred_key = {"det": "box", "kp": "pred_joints2d", "cls": "pred"}[task]
    assert pred_key in report["predictions"]
    if task == "det":  # the untrained heat map (prior 0.1) is above score_thr: there are boxes to compare
        assert report["predictions"]["box"]["detections_per_image"] > 10
    assert report["metrics"]["max_diff"] <= 1e-3
    bad = _perturb(onnx_path, tmp_path / "perturbed.onnx")
    with pytest.raises(ParityError) as err:
        verify_parity(cfg, bad, checkpoint, work_dir=tmp_path / "bad")
    message = str(err.value)
    assert all(part in message for part in TASKS[task]["expect"]), message
    assert not err.value.report["passed"] and err.value.report["predictions"][pred_key]


@pytest.mark.parametrize("task", ["det", "kp"])
def test_the_tester_draws_box_and_keypoint_overlays_into_vis_dir(task: str, demo_roots, tmp_path: Path) -> None:
    from antgo.engine import Tester

    cfg = _config(task, demo_roots[task])
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "best.pth", build_model(cfg["model"]))
    tester = Tester(cfg, work_dir=str(tmp_path), device="cpu")
    tester.config_model(checkpoint=str(checkpoint))
    tester.evaluate(vis_dir=str(tmp_path / "vis"), num_vis=2)  # `antgo test --vis-dir` wrote nothing before
    overlays = sorted((tmp_path / "vis" / "overlays").glob("*.png"))
    assert len(overlays) == 2 and [str(p) for p in overlays] == sorted(f for f in tester.vis_files if "overlays" in f)
