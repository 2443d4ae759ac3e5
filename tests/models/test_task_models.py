"""CenterNet, HeatmapPose and ImageClassifier: decoding of hand-built head tensors, losses, a few steps of
learning, and ONNX export with onnxruntime agreeing on the decoded predictions."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from antgo.engine.prediction_parity import compare_predictions
from antgo.models import build_model
from antgo.models.detectors.postprocess import batched_nms, box_iou, decode_centernet
from antgo.models.heads._dense import draw_gaussian
from antgo.models.heads.heatmap_head import decode_heatmaps, to_heatmap_coords

BACKBONE = dict(type="SimpleConvNet", in_channels=3, channels=(8, 16, 32))
DET = dict(type="CenterNet", backbone=BACKBONE,
           head=dict(type="CenterNetHead", in_channels=[16, 32], in_index=[1, 2], num_classes=2, channels=16))
KP = dict(type="HeatmapPose", backbone=BACKBONE,
          head=dict(type="HeatmapHead", in_channels=32, num_joints=3, channels=16, num_deconv=1))


def test_decode_centernet_recovers_boxes_from_ideal_maps() -> None:
    boxes = torch.tensor([[8.0, 12.0, 40.0, 36.0], [30.0, 4.0, 50.0, 60.0]])  # image 64x64, stride 4
    heat, wh, off = torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16, 16)
    for cls, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        cx, cy = (x1 + x2) / 8, (y1 + y2) / 8
        ix, iy = int(cx), int(cy)
        draw_gaussian(heat[0, cls], ix, iy, 1.0)
        wh[0, :, iy, ix] = torch.tensor([(x2 - x1) / 4, (y2 - y1) / 4])
        off[0, :, iy, ix] = torch.tensor([cx - ix, cy - iy])
    out = decode_centernet(heat, wh, off, (64, 64), score_thr=0.5)
    assert out["label"][0].tolist() == [0, 1]
    assert torch.allclose(out["box"][0], boxes, atol=1e-5)
    assert torch.allclose(out["score"][0], torch.ones(2))


def test_batched_nms_is_per_class_and_greedy() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60.]])
    keep = batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0, 0, 1, 0]), 0.5)
    assert keep.tolist() == [0, 2, 3]
    assert box_iou(boxes[:1], boxes[1:2]).item() == pytest.approx(81 / 100)


@pytest.mark.parametrize("x,y", [(20.3, 17.8), (5.0, 40.5), (33.7, 33.2)])
def test_heatmap_decode_is_sub_pixel(x: float, y: float) -> None:
    heat = torch.zeros(1, 1, 16, 16)
    cell = to_heatmap_coords(torch.tensor([x, y]), (4.0, 4.0))
    draw_gaussian(heat[0, 0], float(cell[0]), float(cell[1]), 1.5)
    pred = decode_heatmaps(heat, (64, 64))
    assert pred.shape == (1, 1, 1, 3)
    assert pred[0, 0, 0, 0].item() == pytest.approx(x, abs=0.02)
    assert pred[0, 0, 0, 1].item() == pytest.approx(y, abs=0.02)


def _det_batch(n: int = 4) -> dict:
    gen = torch.Generator().manual_seed(0)
    image = torch.zeros(n, 3, 64, 64)
    boxes, labels = [], []
    for i in range(n):
        k = i % 3  # 0, 1 and 2 boxes per image
        b = []
        for j in range(k):
            x, y = (torch.rand(2, generator=gen) * 30).tolist()
            b.append([x, y, x + 20 + 8 * j, y + 24])
            image[i, j % 3, int(y):int(y) + 24, int(x):int(x) + 20 + 8 * j] = 2.0
        boxes.append(torch.tensor(b).reshape(-1, 4))
        labels.append(torch.tensor([j % 2 for j in range(k)], dtype=torch.long))
    return {"image": image, "bboxes": boxes, "labels": labels}


def _fit(cfg: dict, batch: dict, steps: int) -> tuple[torch.nn.Module, list[float]]:
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    history = []
    for _ in range(steps):
        losses = model(**batch)
        loss = sum(v for k, v in losses.items() if "loss" in k)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    return model.eval(), history


def test_centernet_learns_and_forward_test_is_per_sample() -> None:
    batch = _det_batch()
    model, history = _fit(DET, batch, 25)
    assert set(model(**batch, return_loss=True)) == {"loss_heatmap", "loss_wh", "loss_offset"}
    assert history[-1] < 0.5 * history[0]
    with torch.no_grad():
        out = model.forward_test(batch["image"])
    assert set(out) == {"box", "score", "label"} and len(out["box"]) == 4
    assert all(b.shape[1] == 4 and len(b) == len(s) == len(l) for b, s, l in zip(out["box"], out["score"], out["label"]))


def test_centernet_rejects_unknown_test_cfg() -> None:
    with pytest.raises(ValueError, match="test_cfg.score_threshold"):
        build_model({**DET, "test_cfg": dict(score_threshold=0.1)})


def test_heatmap_pose_learns_with_visibility() -> None:
    image = torch.zeros(2, 3, 64, 64)
    joints = torch.tensor([[[10., 12, 2], [40, 20, 2], [30, 50, 0]], [[20., 30, 2], [50, 50, 1], [5, 5, 2]]])
    for i in range(2):
        for x, y, v in joints[i].tolist():
            image[i, :, int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3] = 2.0
    batch = {"image": image, "joints2d": [j[None] for j in joints]}
    model, history = _fit(KP, batch, 30)
    assert history[-1] < 0.5 * history[0]
    out = model.forward_test(image)["pred_joints2d"]
    assert out.shape == (2, 1, 3, 3)


def _export(model: torch.nn.Module, path, image: torch.Tensor, names: list[str]) -> list[np.ndarray]:
    import onnxruntime as ort

    class Wrap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m.onnx_export(x)

    with warnings.catch_warnings():  # the TorchScript exporter announces its deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(Wrap(model).eval(), (image,), str(path), input_names=["image"], output_names=names,
                          dynamic_axes={n: {0: "batch"} for n in ["image", *names]}, opset_version=17, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": image.numpy()})


def test_onnx_outputs_decode_like_forward_test(tmp_path) -> None:
    batch = _det_batch()
    det, _ = _fit(DET, batch, 5)
    got = _export(det, tmp_path / "det.onnx", batch["image"], ["heatmap", "wh", "offset"])
    with torch.no_grad():
        ref = det.forward_test(batch["image"])
    ort_pred = det.onnx_postprocess([torch.from_numpy(g) for g in got], batch["image"])
    stats = {}
    compare_predictions(ref, ort_pred, ["box"], stats)
    report = stats["box"].as_dict()
    # an untrained net has many near-tied peaks: a few may fall either side of NMS
    assert report["box_match"] > 0.95 and report["mean_box_iou"] > 0.999 and report["max_score_diff"] < 1e-4
    kp, _ = _fit(KP, {"image": batch["image"], "joints2d": [torch.tensor([[[10., 10, 2]] * 3])] * 4}, 3)
    got = _export(kp, tmp_path / "kp.onnx", batch["image"], ["heatmap"])
    with torch.no_grad():
        ref = kp.forward_test(batch["image"])["pred_joints2d"]
    assert torch.allclose(ref,
                          kp.onnx_postprocess(got, batch["image"])["pred_joints2d"], atol=1e-3)


def test_heatmap_decode_at_the_border_stays_on_the_cell() -> None:
    heat = torch.zeros(1, 1, 16, 16)
    draw_gaussian(heat[0, 0], 0.0, 7.0, 1.5)
    x = decode_heatmaps(heat, (64, 64))[0, 0, 0, 0].item()
    assert x == pytest.approx(1.5)  # cell 0's centre in pixels: (0 + 0.5) * 4 - 0.5
