"""CPU data path: per-sample cost of ``Pascal2012`` + the seed's train pipeline versus hand-written OpenCV.

Both sides read the same generated VOC-layout set (~450x350 JPEGs, palette masks) and do the same
operations in one thread: decode image and mask, rotate both (p=0.5, +-30 deg), resize to 256x256,
brightness / contrast / saturation / hue jitter (each p=0.5), horizontal flip (p=0.5), ``/255`` +
normalise to a CHW float tensor, mask to ``(1, H, W)``. The baseline is plain OpenCV/numpy/PIL and shares
no code with antgo. Rounds over all samples, the two timed alternately sample by sample (the order swapping
every round); prints ms/sample of each and the median ratio
baseline_time / antgo_time (>= 1.0: antgo is at least as fast). A benchmark, not a test::

    .venv/bin/python bench/datapath.py [--rounds 5] [--samples 64] [--stages] [--device cuda --batch 128]

``--device`` also prints, for the device-augmentation split, the CPU workers' per-sample cost (decode only)
and the batch transform's cost per image on that device.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, if not installed

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from antgo.data.builder import build_dataset  # noqa: E402
from antgo.data.datasets.synthetic import make_voc_tree  # noqa: E402
from antgo.data.device_pipeline import split_for_device  # noqa: E402

MEAN = (0.491400, 0.482158, 0.4465231)
STD = (0.247032, 0.243485, 0.2615877)
SEED_PIPELINE = [  # configs/pascal_voc/ddrketnetf_voc.py, data.train.pipeline
    dict(type="Rotation"),
    dict(type="ResizeS", target_dim=(256, 256)),
    dict(type="ColorDistort"),
    dict(type="RandomFlipImage", swap_ids=[], swap_labels=[]),
    dict(type="ToTensor", keys=["image"]),
    dict(type="Normalize", mean=MEAN, std=STD, keys=["image"]),
    dict(type="UnSqueeze", axis=0, keys=["segments"]),
]


class HandChain:
    """What one writes by hand with OpenCV for the same augmentation (YOLO-style LUT colour jitter)."""

    def __init__(self, voc_root: Path, ids: list[str], seed: int = 0) -> None:
        self.voc_root, self.ids = voc_root, ids
        self.rng = np.random.default_rng(seed)
        self.scale = (1.0 / (255.0 * np.asarray(STD, np.float32))).reshape(3, 1, 1)
        self.shift = (np.asarray(MEAN, np.float32) / np.asarray(STD, np.float32)).reshape(3, 1, 1)
        self.values = np.arange(256, dtype=np.float32)

    def _lut(self, f: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(f), 0, 255).astype(np.uint8)

    def _colour(self, img: np.ndarray) -> np.ndarray:
        r = self.rng
        if r.random() < 0.5:  # brightness
            img = cv2.LUT(img, self._lut(self.values * r.uniform(0.5, 1.5)))
        contrast = r.uniform(0.5, 1.5) if r.random() < 0.5 else None
        sat = r.uniform(0.5, 1.5) if r.random() < 0.5 else None
        hue = r.uniform(-18, 18) if r.random() < 0.5 else None
        first = r.random() < 0.5
        if contrast is not None and first:
            grey = float(np.dot(cv2.mean(img)[:3], (0.299, 0.587, 0.114)))
            img = cv2.LUT(img, self._lut(grey + contrast * (self.values - grey)))
        if sat is not None or hue is not None:
            h, s, v = cv2.split(cv2.cvtColor(img, cv2.COLOR_RGB2HSV))
            if hue is not None:
                h = cv2.LUT(h, np.minimum(self._lut(np.mod(self.values + hue, 180.0)), 179).astype(np.uint8))
            if sat is not None:
                s = cv2.LUT(s, self._lut(self.values * sat))
            img = cv2.cvtColor(cv2.merge((h, s, v)), cv2.COLOR_HSV2RGB)
        if contrast is not None and not first:
            grey = float(np.dot(cv2.mean(img)[:3], (0.299, 0.587, 0.114)))
            img = cv2.LUT(img, self._lut(grey + contrast * (self.values - grey)))
        return img

    def __call__(self, i: int) -> dict[str, torch.Tensor]:
        sid = self.ids[i]
        img = cv2.cvtColor(cv2.imread(str(self.voc_root / "JPEGImages" / f"{sid}.jpg")), cv2.COLOR_BGR2RGB)
        with Image.open(self.voc_root / "SegmentationClass" / f"{sid}.png") as im:
            mask = np.array(im)
        h, w = mask.shape
        if self.rng.random() < 0.5:
            m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), self.rng.uniform(-30, 30), 1.0)
            img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
            mask = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderValue=255)
        img = cv2.resize(img, (256, 256), interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask, (256, 256), interpolation=cv2.INTER_NEAREST)
        img = self._colour(img)
        if self.rng.random() < 0.5:
            img, mask = cv2.flip(img, 1), cv2.flip(mask, 1)
        chw = img.transpose(2, 0, 1).astype(np.float32) * self.scale - self.shift
        return {"image": torch.from_numpy(chw), "segments": torch.from_numpy(np.ascontiguousarray(mask[None]))}


def interleaved_round(hand, antgo, n: int, hand_first: bool) -> tuple[float, float]:
    """ms/sample of each, timing them alternately sample by sample so load changes hit both alike."""
    totals = {"hand": 0.0, "antgo": 0.0}
    order = (("hand", hand), ("antgo", antgo)) if hand_first else (("antgo", antgo), ("hand", hand))
    for i in range(n):
        for name, fn in order:
            t0 = time.perf_counter()
            fn(i)
            totals[name] += time.perf_counter() - t0
    return totals["hand"] / n * 1e3, totals["antgo"] / n * 1e3


def stage_costs(reader, n: int) -> None:
    """ms/sample of dataset.sample() and of each transform (on the outputs of the previous ones)."""
    totals = {"sample()": 0.0, **{name: 0.0 for name in reader.pipeline.names}}
    for i in range(n):
        t0 = time.perf_counter()
        s = dict(reader.dataset.sample(i))
        totals["sample()"] += time.perf_counter() - t0
        for name, t in zip(reader.pipeline.names, reader.pipeline.transforms):
            t0 = time.perf_counter()
            s = t(s)
            totals[name] += time.perf_counter() - t0
    for name, total in totals.items():
        print(f"  {name:<16} {total / n * 1e3:6.3f} ms")


def device_split(reader_cfg: dict, device: str, batch: int, rounds: int) -> None:
    """With device augmentation: the CPU workers' per-sample cost (decode only) and the batch transform's
    cost per image on ``device`` (synchronised for timing only)."""
    cpu_cfg, batch_transform = split_for_device(dict(reader_cfg, device_augmentation=True), device)
    part = build_dataset(cpu_cfg)
    n = len(part)
    full = build_dataset(reader_cfg)
    t_full = min(interleaved_round(full.__getitem__, part.__getitem__, n, r % 2 == 0)[0] for r in range(rounds))
    t_part = min(interleaved_round(full.__getitem__, part.__getitem__, n, r % 2 == 0)[1] for r in range(rounds))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    samples = part.collate_fn([part[i % n] for i in range(batch)])
    times = []
    for _ in range(rounds + 1):
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in samples.items()}
        sync()
        t0 = time.perf_counter()
        batch_transform(moved)
        sync()
        times.append(time.perf_counter() - t0)
    per_image = min(times[1:]) / batch * 1e3
    print(f"device augmentation on {device}: CPU worker {t_part:.3f} ms/sample (decode only) vs {t_full:.3f} "
          f"with the whole pipeline ({t_full / t_part:.2f}x); batch transform {per_image:.4f} ms/image "
          f"at batch {batch} ({1e3 / per_image:.0f} img/s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--stages", action="store_true", help="also print the cost of each stage")
    parser.add_argument("--device", default=None, help="also time the device-augmentation split on this device")
    parser.add_argument("--batch", type=int, default=128, help="batch size for --device")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    np.random.seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_voc_tree(tmp, splits={"train": args.samples, "val": 1}, size_range=(340, 460), seed=0)
        reader_cfg = dict(type="Pascal2012", train_or_test="train", dir=str(root),
                          ext_params=dict(task_type="SEGMENTATION", aug=False), pipeline=SEED_PIPELINE,
                          inputs_def=dict(fields=["image", "segments"]))
        reader = build_dataset(reader_cfg)
        hand = HandChain(reader.dataset.voc_root, reader.dataset.ids)
        n = len(reader)
        interleaved_round(hand, reader.__getitem__, n, True)  # warm the page cache and the code
        ratios, hands, antgos = [], [], []
        for r in range(args.rounds):
            t_hand, t_antgo = interleaved_round(hand, reader.__getitem__, n, hand_first=r % 2 == 0)
            ratios.append(t_hand / t_antgo)
            hands.append(t_hand)
            antgos.append(t_antgo)
            print(f"round {r}: hand-written OpenCV {t_hand:.3f} ms/sample, antgo {t_antgo:.3f} ms/sample, "
                  f"ratio {ratios[-1]:.3f}")
        if args.stages:
            stage_costs(reader, n)
        if args.device:
            device_split(reader_cfg, args.device, args.batch, args.rounds)
    print(f"median ratio hand/antgo = {statistics.median(ratios):.3f}, ratio of the best rounds "
          f"{min(hands):.3f}/{min(antgos):.3f} = {min(hands) / min(antgos):.3f} "
          f"(>= 1.0: antgo's CPU sample path is at least as fast); {n} samples, {args.rounds} rounds, 1 thread")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
