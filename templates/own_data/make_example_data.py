"""Write a tiny example data set in the layout my_dataset.py reads (to try the template before using your data).

    python make_example_data.py data [--train 24] [--val 8]
"""
import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def make_sample(rng, size=64):
    image = rng.integers(60, 120, (size, size, 3), dtype=np.uint8)
    mask = np.zeros((size, size), np.uint8)
    cx, cy, r = (int(v) for v in rng.integers(16, size - 16, 3) % (size // 2) + size // 4)
    cv2.circle(mask, (cx, cy), max(r // 2, 6), 1, -1)
    x, y = (int(v) for v in rng.integers(0, size - 20, 2))
    mask[y:y + 14, x:x + 14][mask[y:y + 14, x:x + 14] == 0] = 2
    image[mask == 1] = (220, 60, 60)
    image[mask == 2] = (60, 60, 220)
    return image, mask


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--train", type=int, default=24)
    p.add_argument("--val", type=int, default=8)
    args = p.parse_args(argv)
    root = Path(args.out)
    for sub in ("images", "masks", "splits"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = {"train": [], "val": []}
    for split, count in (("train", args.train), ("val", args.val)):
        for i in range(count):
            name = f"{split}_{i:03d}"
            image, mask = make_sample(rng)
            cv2.imwrite(str(root / "images" / f"{name}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            Image.fromarray(mask, mode="L").save(root / "masks" / f"{name}.png")
            names[split].append(name)
        (root / "splits" / f"{split}.txt").write_text("\n".join(names[split]) + "\n")
    (root / "classes.txt").write_text("background\ndisc\nbox\n")
    print(f"wrote {args.train} train and {args.val} val samples to {root}")


if __name__ == "__main__":
    main()
