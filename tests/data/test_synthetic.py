"""The synthetic VOC generators: deterministic, read by Pascal2012, demo set idempotent."""
import json
import subprocess
import sys

import numpy as np
from PIL import Image

from antgo.data.datasets import DEMO_CLASS_NAMES, Pascal2012, make_demo_voc, make_voc_tree


def files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_make_voc_tree_is_deterministic(tmp_path):
    a = make_voc_tree(tmp_path / "a", splits={"train": 3, "val": 2}, sbd=2, seed=7)
    b = make_voc_tree(tmp_path / "b", splits={"train": 3, "val": 2}, sbd=2, seed=7)
    c = make_voc_tree(tmp_path / "c", splits={"train": 3, "val": 2}, sbd=2, seed=8)
    assert files(a) == files(b) and files(a) != files(c)
    names = set(files(a))
    assert "VOCdevkit/VOC2012/ImageSets/Segmentation/trainval.txt" in names and "trainaug.txt" in names
    assert sum(n.startswith("SegmentationClassAug/") for n in names) == 2 + 2 + 1  # new, overlap, one val id


def test_make_voc_tree_options(tmp_path):
    root = make_voc_tree(tmp_path, splits={"train": 3}, size_range=(10, 12), num_classes=4, void_border=False)
    ds = Pascal2012("train", root, dict(aug=False))
    for i in range(3):
        s = ds.sample(i)
        assert 10 <= min(s["image"].shape[:2]) and max(s["image"].shape[:2]) <= 12
        assert set(np.unique(s["segments"])) <= {0, 1, 2, 3}


def test_demo_set_layout_contents_and_idempotence(tmp_path):
    root = make_demo_voc(tmp_path / "demo", seed=0)
    manifest = json.loads((root / "antgo_demo.json").read_text())
    assert manifest["class_names"] == list(DEMO_CLASS_NAMES) and len(DEMO_CLASS_NAMES) == 5
    train = Pascal2012("train", root, dict(task_type="SEGMENTATION", aug=True))
    val = Pascal2012("val", root, dict(task_type="SEGMENTATION", aug=True))
    assert len(val) == 100 and len(train) == 360 and train.num_sbd == 60
    assert train.class_names == DEMO_CLASS_NAMES
    seen = set()
    for i in range(0, 100, 10):
        s = val.sample(i)
        h, w = s["image"].shape[:2]
        assert 100 <= h <= 160 and 100 <= w <= 160
        seen |= set(np.unique(s["segments"]).tolist())
    assert seen == {0, 1, 2, 3, 4, 255}
    png = root / "VOCdevkit/VOC2012/SegmentationClass/2008_000000.png"
    with Image.open(png) as im:
        assert im.mode == "P"
    # idempotent: a second call leaves the files untouched; a damaged tree is regenerated
    stamp = png.stat().st_mtime_ns
    make_demo_voc(root, seed=0)
    assert png.stat().st_mtime_ns == stamp
    png.unlink()
    make_demo_voc(root, seed=0)
    assert png.is_file()


def test_demo_colour_alone_is_not_a_perfect_classifier(tmp_path):
    """Neighbouring classes share hues, so shape is needed too (but the hue bands stay characteristic)."""
    import cv2
    root = make_demo_voc(tmp_path / "demo")
    ds = Pascal2012("train", root, dict(aug=False))
    hues = {c: [] for c in range(1, 5)}
    for i in range(60):
        s = ds.sample(i)
        h = cv2.cvtColor(s["image"], cv2.COLOR_RGB2HSV)[..., 0].astype(int)
        for c in hues:
            hues[c].append(h[s["segments"] == c])
    med = {c: np.median(np.concatenate(v)) for c, v in hues.items()}
    assert med[2] < med[3] < med[4]
    pct = {c: np.percentile(np.concatenate(v), [1, 99]) for c, v in hues.items()}
    assert pct[3][0] < pct[2][1] and pct[4][0] < pct[3][1]  # neighbouring classes share some hues


def test_cli_writes_demo(tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "antgo.data.datasets.synthetic", "voc", str(out), "--train", "2",
                           "--val", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (out / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").read_text().split() == ["2008_000000"]


def test_the_documented_command_runs_without_a_runpy_warning() -> None:
    run = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "antgo.data.datasets.synthetic",
                          "--help"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "RuntimeWarning" not in run.stderr, run.stderr
