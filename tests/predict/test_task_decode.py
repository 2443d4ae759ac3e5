"""``antgo predict`` for detection, keypoints and classification: the numpy decode of the ONNX outputs equals
the model's torch post-process on the same tensors, and both predict paths write predictions and overlays."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TASKS = {"detection": "demo_det.py", "keypoints": "demo_kp.py", "classification": "demo_cls.py"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Each demo model at random init saved as a checkpoint and exported (TorchScript), plus 2 images."""
    from antgo.engine.checkpoint import save_checkpoint
    from antgo.engine.exporter import Exporter, load_config
    from antgo.models import build_model

    root = tmp_path_factory.mktemp("task_predict")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(120, 160), (90, 70)]):  # not the input size: predictions are mapped back
        cv2.imwrite(str(images / f"img_{i}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    models = {}
    for task, name in TASKS.items():
        cfg = load_config(str(REPO / "configs" / "demo" / name))
        torch.manual_seed(0)
        model = build_model(cfg["model"]).eval()
        ckpt = save_checkpoint(str(root / f"{task}.pth"), model)
        onnx_path = Exporter(cfg, work_dir=str(root / task)).export(ckpt, str(root / task / "model.onnx"),
                                                                    dynamo=False)
        models[task] = {"cfg": str(REPO / "configs" / "demo" / name), "ckpt": ckpt, "onnx": onnx_path}
    return {"root": root, "images": images, "models": models}


@pytest.mark.parametrize("task", list(TASKS))
def test_numpy_decode_equals_torch_postprocess(exported, task):
    from antgo.predict.decode import decode_outputs
    from antgo.predict.runner import CheckpointModel, OnnxModel, read_image
    from antgo.predict.processing import preprocess

    paths = exported["models"][task]
    onnx_model, ckpt_model = OnnxModel(paths["onnx"]), CheckpointModel(paths["cfg"], paths["ckpt"])
    meta = onnx_model.meta
    assert meta["task"] == task and meta["decode"]
    x = preprocess(read_image(exported["images"] / "img_0.png"), meta)
    outputs = onnx_model(x)
    ours = decode_outputs(outputs, meta, x.shape[2:4])
    theirs = ckpt_model.decode(outputs, x)  # the model's onnx_postprocess on the same tensors
    if task == "detection":
        assert meta["decode"]["score_thr"] == 0.05 and meta["decode"]["nms_iou"] == 0.6
        assert len(ours["box"]) > 0 and np.array_equal(ours["label"], theirs["label"])
        np.testing.assert_allclose(ours["box"], theirs["box"], atol=1e-3)
        np.testing.assert_allclose(ours["score"], theirs["score"], atol=1e-6)
    elif task == "keypoints":
        assert meta["keypoint_names"][0] == "roof" and len(meta["skeleton"]) == 5
        np.testing.assert_allclose(ours["keypoints"], theirs["keypoints"], atol=1e-3)
    else:
        assert meta["decode"]["output"] == "probabilities"  # ImageClassifier exports softmax already
        assert np.array_equal(np.argsort(-ours["probs"]), np.argsort(-theirs["probs"]))
        np.testing.assert_allclose(ours["probs"], theirs["probs"], atol=1e-6)


def _check_result(folder: Path, task: str) -> dict:
    result = json.loads((folder / "predictions.json").read_text())
    assert result["task"] == task and len(result["predictions"]) == 2
    for pred in result["predictions"]:
        overlay = cv2.imread(str(folder / pred["overlay"]))
        assert overlay is not None and min(overlay.shape[:2]) >= 320
        if task == "detection":
            assert len(pred["boxes"]) == len(pred["labels"]) == len(pred["scores"]) > 0
            assert all(0 <= b[2] <= pred["width"] and 0 <= b[3] <= pred["height"] for b in pred["boxes"])
            assert set(pred["label_names"]) <= {"circle", "square", "triangle", "cross"}
        elif task == "keypoints":
            assert [k["name"] for k in pred["keypoints"]] == ["roof", "left_eave", "right_eave", "left_base",
                                                              "right_base"]
            assert all(-1 <= k["x"] <= pred["width"] and "score" in k for k in pred["keypoints"])
        else:
            assert len(pred["top"]) == 4 and pred["top"][0]["class"] in {"circle", "square", "triangle", "cross"}
    return result


def test_predict_with_onnx_only_and_with_checkpoint(exported):
    from antgo.cli import main

    root, images = exported["root"], str(exported["images"])
    calls = [["predict", images, "--onnx", m["onnx"], "--out-dir", str(root / f"onnx_{t}")]
             for t, m in exported["models"].items()]
    code = ("import sys\nfrom antgo.cli import main\n"
            f"for args in {calls!r}:\n    assert main(args) == 0, args\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], cwd=root, env=dict(os.environ, PYTHONPATH=str(REPO)),
                   check=True, timeout=120)
    for task, paths in exported["models"].items():
        assert main(["predict", paths["cfg"], images, "--checkpoint", paths["ckpt"],
                     "--out-dir", str(root / f"ckpt_{task}")]) == 0
        _check_result(root / f"onnx_{task}", task)  # the paths' decodes agree: test_numpy_decode_equals_...
        _check_result(root / f"ckpt_{task}", task)  # (random-init scores nearly tie, so no cross-graph check)


def test_parity_check_reads_the_decode_parameters(exported, tmp_path):
    import shutil

    import onnxruntime as ort

    from antgo.engine.exporter import load_config
    from antgo.predict.metadata import metadata_problems, read_metadata, write_metadata

    paths = exported["models"]["detection"]
    session = ort.InferenceSession(paths["onnx"], providers=["CPUExecutionProvider"])
    assert metadata_problems(session, load_config(paths["cfg"])) == []
    changed = tmp_path / "changed.onnx"
    shutil.copy(paths["onnx"], changed)
    write_metadata(changed, {"decode": {**read_metadata(paths["onnx"])["decode"], "score_thr": 0.5}})
    session = ort.InferenceSession(str(changed), providers=["CPUExecutionProvider"])
    assert [p.split(" is ")[0] for p in metadata_problems(session, load_config(paths["cfg"]))] == \
        ["ONNX metadata 'decode'"]
