"""The embedded demo data set: coloured shapes on textured backgrounds, written in Pascal VOC layout.

Generated offline and deterministically (a few seconds), so ``make demo`` and the tests run the real
``Pascal2012`` reader without downloading anything. Each shape class has a characteristic hue band;
the bands of neighbouring classes overlap a little, so a model has to use shape as well as colour.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import cv2
import numpy as np

from antgo.data.datasets._voc_writer import (hsv_colour, shape_mask, voc_dirs, void_boundaries, write_grey_mask,
                                             write_ids, write_palette_mask, write_rgb_jpeg)

logger = logging.getLogger(__name__)

DEMO_CLASS_NAMES = ("background", "circle", "square", "triangle", "cross")
DEMO_VERSION = 2
MANIFEST = "antgo_demo.json"
# OpenCV hue bands (0-179, wrapping) per object class; neighbours overlap by about 5 units.
_HUE_BANDS = {1: (-10.0, 25.0), 2: (20.0, 65.0), 3: (60.0, 115.0), 4: (110.0, 170.0)}
_COUNTS = {"train": 300, "val": 100, "sbd_new": 60, "sbd_overlap": 100, "sbd_val": 20}
_SIZE_RANGE = (100, 160)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A low-saturation textured background: base colour, smooth blotches, a gradient and pixel noise."""
    base = hsv_colour(rng, (0, 180), (0, 60), (70, 210))
    blotches = cv2.resize(rng.normal(0, 25, size=(5, 5, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    ramp = np.linspace(-1, 1, w, dtype=np.float32)[None, :, None] * rng.uniform(-25, 25)
    grey_blotches = blotches.mean(2, keepdims=True)  # mostly brightness texture keeps saturation low
    return base + 0.7 * grey_blotches + 0.3 * blotches + ramp


def paint_object(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, colour: np.ndarray, r: float) -> None:
    """Paint ``mask`` in float ``image`` with ``colour``, shaded across the object and with a per-object
    texture amplitude, so an object's colour is not constant."""
    yy, xx = np.nonzero(mask)
    if not len(yy):
        return
    shade = 1.0 + rng.uniform(-0.2, 0.2) * (xx - xx.mean()) / max(r, 1.0)
    image[yy, xx] = colour[None, :] * shade[:, None] + rng.normal(0, rng.uniform(4, 14), size=(len(yy), 3))


def finish_image(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Pixel noise and a slight blur (soft edges, like a camera), as RGB ``uint8``."""
    image = (image + rng.normal(0, 6, size=image.shape)).astype(np.float32)
    image = cv2.GaussianBlur(image, (0, 0), 0.7)
    return np.clip(image, 0, 255).round().astype(np.uint8)


def render_demo_sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One demo image (RGB uint8) and its mask (class indices, 255 on 2-px class boundaries)."""
    h, w = (int(v) for v in rng.integers(_SIZE_RANGE[0], _SIZE_RANGE[1] + 1, size=2))
    image = _background(rng, h, w)
    label = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        cls = int(rng.integers(1, len(DEMO_CLASS_NAMES)))
        r = rng.uniform(0.13, 0.3) * min(h, w)
        m = shape_mask(DEMO_CLASS_NAMES[cls], h, w, rng.uniform(0.6 * r, w - 0.6 * r),
                       rng.uniform(0.6 * r, h - 0.6 * r), r, rng.uniform(0, 360))
        paint_object(rng, image, m, hsv_colour(rng, _HUE_BANDS[cls], (130, 255), (120, 255)), r)
        label[m] = cls
    return finish_image(rng, image), void_boundaries(label, 2)


def _manifest(seed: int) -> dict:
    return {"version": DEMO_VERSION, "seed": int(seed), "class_names": list(DEMO_CLASS_NAMES),
            "counts": dict(_COUNTS), "size_range": list(_SIZE_RANGE), "layout": "VOCdevkit/VOC2012"}


def _is_complete(root: Path, seed: int) -> bool:
    marker = root / MANIFEST
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except ValueError:
        return False
    recorded.pop("seconds", None)
    if recorded != _manifest(seed):
        return False
    voc = root / "VOCdevkit" / "VOC2012"
    n_images = _COUNTS["train"] + _COUNTS["val"] + _COUNTS["sbd_new"]
    return (sum(1 for _ in (voc / "JPEGImages").glob("*.jpg")) == n_images
            and sum(1 for _ in (voc / "SegmentationClass").glob("*.png")) == _COUNTS["train"] + _COUNTS["val"])


def make_demo_voc(root: str | Path, seed: int = 0, force: bool = False) -> Path:
    """Write the demo set under ``root`` (``root/VOCdevkit/VOC2012`` + SBD-style extras) and return ``root``.

    Contents: 300 train and 100 val images of 100-160 px per side; classes ``DEMO_CLASS_NAMES``
    (``class_names.txt``); palette masks with 255 on 2-px boundaries; ``SegmentationClassAug`` +
    ``trainaug.txt`` listing 100 train ids, 60 new ids and 20 val ids (so ``aug=True`` gives 360
    train samples). Idempotent: skipped when ``antgo_demo.json`` matches and the files are there.
    """
    root = Path(root)
    if not force and _is_complete(root, seed):
        logger.info("demo data set already complete in %s", root)
        return root
    start = time.perf_counter()
    (root / MANIFEST).unlink(missing_ok=True)  # an interrupted run must not look complete
    voc = root / "VOCdevkit" / "VOC2012"
    voc_dirs(voc)
    aug_dir = root / "SegmentationClassAug"
    aug_dir.mkdir(parents=True, exist_ok=True)
    ids = {"train": [f"2007_{i:06d}" for i in range(_COUNTS["train"])],
           "val": [f"2008_{i:06d}" for i in range(_COUNTS["val"])],
           "sbd": [f"2011_{i:06d}" for i in range(_COUNTS["sbd_new"])]}
    aug_ids = set(ids["train"][:_COUNTS["sbd_overlap"]] + ids["val"][:_COUNTS["sbd_val"]] + ids["sbd"])
    for part, offset in (("train", 0), ("val", 1_000_000), ("sbd", 2_000_000)):
        for k, sid in enumerate(ids[part]):
            # One generator per sample: any sample can be regenerated on its own, in any order.
            image, mask = render_demo_sample(np.random.default_rng([int(seed), offset + k]))
            write_rgb_jpeg(voc / "JPEGImages" / f"{sid}.jpg", image, quality=92)
            if part != "sbd":
                write_palette_mask(voc / "SegmentationClass" / f"{sid}.png", mask)
            if sid in aug_ids:
                sbd_mask = mask.copy()
                sbd_mask[sbd_mask == 255] = 0  # SBD masks carry no void boundary
                write_grey_mask(aug_dir / f"{sid}.png", sbd_mask)
    split_dir = voc / "ImageSets" / "Segmentation"
    write_ids(split_dir / "train.txt", ids["train"])
    write_ids(split_dir / "val.txt", ids["val"])
    write_ids(split_dir / "trainval.txt", ids["train"] + ids["val"])
    write_ids(root / "trainaug.txt", ids["train"][:_COUNTS["sbd_overlap"]] + ids["sbd"] + ids["val"][:_COUNTS["sbd_val"]])
    write_ids(voc / "class_names.txt", DEMO_CLASS_NAMES)
    seconds = time.perf_counter() - start
    (root / MANIFEST).write_text(json.dumps({**_manifest(seed), "seconds": round(seconds, 2)}, indent=1))
    logger.info("demo data set written to %s in %.1f s (%d train, %d val, %d SBD extra)", root, seconds,
                _COUNTS["train"], _COUNTS["val"], _COUNTS["sbd_new"])
    return root
