"""The "your own data" template end to end (train, export, predict) in a copy of templates/own_data, as a user
runs it; the self-describing ONNX file, parity's metadata check and ``antgo predict`` on a folder."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "templates" / "own_data"


def _antgo(project: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), ANTGO_PROGRESS="0")
    result = subprocess.run([sys.executable, "-m", "antgo", *args], cwd=project, env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The template copied, its example data written, trained for one epoch and exported."""
    folder = tmp_path_factory.mktemp("own_data") / "project"
    shutil.copytree(TEMPLATE, folder)
    subprocess.run([sys.executable, "make_example_data.py", "data", "--train", "8", "--val", "4"], cwd=folder,
                   check=True, capture_output=True, timeout=60)
    trained = _antgo(folder, "train", "config.py", "--work-dir", "work", "--max-epochs", "1")
    _antgo(folder, "export", "config.py", "--work-dir", "work", "--onnx", "work/model.onnx")
    return {"dir": folder, "train_log": trained.stderr}


def test_template_trains_with_its_dataset_plugin(project):
    work = project["dir"] / "work"
    assert (work / "best.pth").is_file() and (work / "model.onnx").is_file()
    best = json.loads((work / "best.json").read_text())
    assert best["metric"] == "miou" and "iou_disc" in best["all"]  # class names from the config


def test_one_epoch_run_prints_no_line_twice(project):
    lines = [re.sub(r"^\S+ \S+ \S ", "", line) for line in project["train_log"].splitlines() if line.strip()]
    repeated = sorted({line for line in lines if lines.count(line) > 1})
    assert lines and not repeated, repeated
    assert any(line.startswith("model ") and "parameters" in line for line in lines)  # the start header
    assert any(line.startswith("epoch 1/1 | loss") for line in lines)  # the per-epoch line


def test_weights_only_best_file_is_smaller_and_loads(project):
    from antgo.engine.checkpoint import load_checkpoint
    from antgo.engine.exporter import load_config
    from antgo.models import build_model

    work = project["dir"] / "work"
    weights = work / "best_weights.pth"
    assert weights.stat().st_size < 0.8 * (work / "best.pth").stat().st_size
    cwd = os.getcwd()
    os.chdir(project["dir"])  # custom_imports finds my_dataset.py from the project folder
    sys.path.insert(0, str(project["dir"]))
    try:
        model = build_model(load_config(str(project["dir"] / "config.py"))["model"])
    finally:
        sys.path.remove(str(project["dir"]))
        os.chdir(cwd)
    ckpt = load_checkpoint(str(weights), model)
    assert "optimizer" not in ckpt and ckpt["meta"]["weights_only"] is True


def test_onnx_file_describes_itself_and_has_a_signature(project):
    from antgo.predict.metadata import read_metadata

    path = project["dir"] / "work" / "model.onnx"
    meta = read_metadata(str(path))
    assert meta["task"] == "segmentation" and meta["input_name"] == "image" and meta["input_size"] == [64, 64]
    assert meta["resize"] == {"policy": "stretch", "size": [64, 64]} and meta["colour_order"] == "RGB"
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406]) and meta["pixel_scale"] == pytest.approx(1 / 255)
    assert meta["class_names"] == ["background", "disc", "box"] and "argmax" in meta["output_meaning"]
    pytest.importorskip("mlflow", reason="the signature is MLflow's (the core runs without it, e.g. on a GPU image)")
    from antgo.tracking.registry import onnx_signature

    signature = onnx_signature(onnx.load(str(path))).to_dict()
    inputs, outputs = json.loads(signature["inputs"]), json.loads(signature["outputs"])
    assert inputs[0]["name"] == "image" and inputs[0]["tensor-spec"]["shape"] == [-1, 3, 64, 64]
    assert outputs[0]["name"] == "heatmap" and outputs[0]["tensor-spec"]["shape"][:2] == [-1, 3]


def test_parity_checks_the_metadata(project, monkeypatch):
    from antgo.engine.parity import ParityError, verify_parity
    from antgo.predict.metadata import write_metadata

    monkeypatch.chdir(project["dir"])
    monkeypatch.syspath_prepend(str(project["dir"]))
    work = project["dir"] / "work"
    assert verify_parity("config.py", str(work / "model.onnx"), str(work / "best.pth"), num_samples=2)["passed"]
    wrong = work / "wrong_mean.onnx"
    shutil.copy(work / "model.onnx", wrong)
    write_metadata(wrong, {"mean": [0.5, 0.5, 0.5]})
    with pytest.raises(ParityError, match="ONNX metadata 'mean'"):
        verify_parity("config.py", str(wrong), str(work / "best.pth"), num_samples=2, work_dir=str(work / "bad"))


def test_predict_folder_with_checkpoint(project):
    folder = project["dir"]
    _antgo(folder, "predict", "config.py", "data/images", "--checkpoint", "work/best_weights.pth",
           "--out-dir", "pred_ckpt")
    result = json.loads((folder / "pred_ckpt" / "predictions.json").read_text())
    assert len(result["predictions"]) == 12 and result["task"] == "segmentation"
    first = result["predictions"][0]
    import cv2

    mask = cv2.imread(str(folder / "pred_ckpt" / first["mask"]), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (first["height"], first["width"])  # back at the image's own size
    overlay = cv2.imread(str(folder / "pred_ckpt" / first["overlay"]))
    assert overlay.shape[0] >= 320 and overlay.shape[1] > 2 * overlay.shape[0]  # image | prediction | legend


def test_predict_with_onnx_only_never_imports_torch(project, tmp_path):
    folder = project["dir"]
    onnx_only = tmp_path / "model.onnx"
    shutil.copy(folder / "work" / "model.onnx", onnx_only)  # no config, no checkpoint beside it
    code = ("import sys\nfrom antgo.cli import main\n"
            f"rc = main(['predict', {str(folder / 'data' / 'images')!r}, '--onnx', {str(onnx_only)!r}, "
            f"'--out-dir', {str(tmp_path / 'pred')!r}])\n"
            "assert rc == 0, rc\nassert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)),
                   check=True, timeout=120)
    onnx_result = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    ckpt_result = json.loads((folder / "pred_ckpt" / "predictions.json").read_text()) \
        if (folder / "pred_ckpt").is_dir() else None
    assert [p["source"] for p in onnx_result["predictions"]][:2] == ["train_000.jpg", "train_001.jpg"]
    if ckpt_result is not None:  # the same preprocessing from the file as from the config
        import cv2

        a = cv2.imread(str(tmp_path / "pred" / "train_000_mask.png"), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(folder / "pred_ckpt" / "train_000_mask.png"), cv2.IMREAD_UNCHANGED)
        assert np.mean(a == b) > 0.99


def test_predict_reads_a_video(project, tmp_path):
    import cv2

    from antgo.predict.runner import OnnxModel, run_predict

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for i in range(3):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    records = run_predict(OnnxModel(project["dir"] / "work" / "model.onnx"), video, tmp_path / "out")
    assert [(r["source"], r["frame"]) for r in records] == [("clip.avi", 0), ("clip.avi", 1), ("clip.avi", 2)]
