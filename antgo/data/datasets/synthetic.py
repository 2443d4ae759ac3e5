"""Deterministic synthetic data in Pascal VOC layout: tiny trees for tests and the embedded demo set.

CLI::

    python -m antgo.data.datasets.synthetic demo OUT_DIR [--task seg|det|kp|cls] [--seed 0]
    python -m antgo.data.datasets.synthetic voc OUT_DIR --train 8 --val 4 [--sbd 4]
"""
from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np

from antgo.data.datasets._voc_writer import (VOID, shape_mask, voc_dirs, void_boundaries, write_grey_mask,
                                             write_ids, write_palette_mask, write_rgb_jpeg)
from antgo.data.datasets.demo import DEMO_CLASS_NAMES, make_demo_voc
from antgo.data.datasets.synthetic_tasks import make_demo

logger = logging.getLogger(__name__)

LAYOUTS = ("devkit", "voc2012", "flat")
_SHAPES = ("circle", "square", "triangle", "cross", "ellipse")
_ID_PREFIX = {"train": "2007", "val": "2008", "test": "2009", "sbd": "2011"}


def _voc_root(root: Path, layout: str) -> Path:
    if layout == "devkit":
        return root / "VOCdevkit" / "VOC2012"
    if layout == "voc2012":
        return root / "VOC2012"
    if layout == "flat":
        return root
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


def render_sample(rng: np.random.Generator, h: int, w: int, num_classes: int,
                  objects: tuple[int, int] = (1, 3)) -> tuple[np.ndarray, np.ndarray]:
    """An RGB uint8 image and its class-index mask (no void yet): noisy background plus shapes whose
    colour depends on the class."""
    label = np.zeros((h, w), np.uint8)
    image = np.empty((h, w, 3), np.float32)
    image[:] = rng.uniform(40, 200, size=3)
    for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
        cls = int(rng.integers(1, num_classes)) if num_classes > 1 else 0
        r = rng.uniform(0.15, 0.35) * min(h, w)
        m = shape_mask(_SHAPES[cls % len(_SHAPES)], h, w, rng.uniform(r, w - r), rng.uniform(r, h - r), r,
                       rng.uniform(0, 360))
        hue = (cls * 37) % 180  # a class-specific hue, spread over the circle
        colour = cv2.cvtColor(np.array([[[hue, 200, 220]]], np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
        image[m] = colour
        label[m] = cls
    image += rng.normal(0, 6, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


def make_voc_tree(root: str | Path, splits: Mapping[str, int] | None = None, size_range: tuple[int, int] = (24, 40),
                  num_classes: int = 21, seed: int = 0, void_border: bool = True, sbd: int = 0,
                  sbd_overlap: int | None = None, sbd_val: int = 1, layout: str = "devkit",
                  objects: tuple[int, int] = (1, 3), class_names: list[str] | None = None) -> Path:
    """Write a small deterministic VOC 2012 segmentation tree and return the ``dir`` to configure.

    ``splits``: ids per split (default ``{'train': 4, 'val': 2}``); ``trainval.txt`` is written when
    both exist. Images are JPEG (sides in ``size_range``), masks palette PNGs with the VOC palette and,
    with ``void_border``, 255 bands where classes meet. ``sbd > 0`` adds ``SegmentationClassAug/``
    grey masks (no void) and ``trainaug.txt`` at the root: ``sbd`` new ids (images in JPEGImages),
    ``sbd_overlap`` train ids (default half) and ``sbd_val`` val ids, as in the real SBD release.
    ``layout``: 'devkit' (``root/VOCdevkit/VOC2012``), 'voc2012' (``root/VOC2012``) or 'flat' (root is VOC2012).
    ``class_names`` writes ``class_names.txt``.
    """
    root = Path(root)
    splits = dict(splits if splits is not None else {"train": 4, "val": 2})
    voc = _voc_root(root, layout)
    voc_dirs(voc)
    rng = np.random.default_rng(seed)
    written: dict[str, list[str]] = {}
    labels: dict[str, np.ndarray] = {}

    def new_sample(sid: str) -> np.ndarray:
        h, w = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
        image, label = render_sample(rng, h, w, num_classes, objects)
        write_rgb_jpeg(voc / "JPEGImages" / f"{sid}.jpg", image)
        return label

    for split, n in splits.items():
        prefix = _ID_PREFIX.get(split, "2010")
        written[split] = [f"{prefix}_{k:06d}" for k in range(int(n))]
        for sid in written[split]:
            labels[sid] = new_sample(sid)
            if split != "test":
                mask = void_boundaries(labels[sid]) if void_border else labels[sid]
                write_palette_mask(voc / "SegmentationClass" / f"{sid}.png", mask)
        write_ids(voc / "ImageSets" / "Segmentation" / f"{split}.txt", written[split])
    if "train" in written and "val" in written and "trainval" not in splits:
        write_ids(voc / "ImageSets" / "Segmentation" / "trainval.txt", written["train"] + written["val"])
    if class_names is not None:
        write_ids(voc / "class_names.txt", class_names)
    if sbd > 0:
        train, val = written.get("train", []), written.get("val", [])
        overlap = train[: (len(train) + 1) // 2 if sbd_overlap is None else int(sbd_overlap)]
        new = [f"{_ID_PREFIX['sbd']}_{k:06d}" for k in range(int(sbd))]
        aug_dir = root / "SegmentationClassAug"
        aug_dir.mkdir(parents=True, exist_ok=True)
        for sid in new:
            labels[sid] = new_sample(sid)
        aug_ids = overlap + new + val[:int(sbd_val)]
        for sid in aug_ids:
            write_grey_mask(aug_dir / f"{sid}.png", labels[sid])
        write_ids(root / "trainaug.txt", aug_ids)
    logger.debug("make_voc_tree: %s in %s", {k: len(v) for k, v in written.items()}, root)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m antgo.data.datasets.synthetic",
                                     description="Write synthetic and demo data sets.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the embedded demo set (idempotent)")
    demo.add_argument("out_dir")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--task", choices=("seg", "det", "kp", "cls"), default="seg",
                      help="seg: VOC segmentation (default); det/kp: COCO boxes/keypoints; cls: ImageFolder")
    voc = sub.add_parser("voc", help="a tiny VOC tree")
    voc.add_argument("out_dir")
    voc.add_argument("--train", type=int, default=8)
    voc.add_argument("--val", type=int, default=4)
    voc.add_argument("--sbd", type=int, default=0)
    voc.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    if args.command == "demo":
        path = make_demo(args.task, args.out_dir, seed=args.seed)
    else:
        path = make_voc_tree(args.out_dir, splits={"train": args.train, "val": args.val}, sbd=args.sbd, seed=args.seed)
    logger.info("data set ready in %s (%.1f s); use dir=%r", path, time.perf_counter() - start, str(path))
    return 0


__all__ = ["make_voc_tree", "make_demo_voc", "render_sample", "DEMO_CLASS_NAMES", "VOID", "LAYOUTS"]

if __name__ == "__main__":
    raise SystemExit(main())
