"""A data set plugin for your own segmentation data: a folder of images and masks.

Layout (``dir`` in the config)::

    <dir>/images/<name>.jpg|png     RGB images, any size
    <dir>/masks/<name>.png          one class index per pixel (0..N-1, 255 = ignore), same size as the image
    <dir>/classes.txt               one class name per line (optional)
    <dir>/splits/train.txt, val.txt image names without extension, one per line (optional: without them
                                    every image is in every split)

Registered as ``FolderSegmentation``; the config loads this file through ``custom_imports``.
Change ``sample()`` to read another format: it returns ``image`` (RGB uint8, H x W x 3) and ``segments``
(uint8 H x W).
"""
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from antgo.data.dataset import Dataset
from antgo.data.reader import register

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@register
class FolderSegmentation(Dataset):
    """Segmentation samples from <dir>/images + <dir>/masks (see the module docstring for the layout)."""

    def __init__(self, train_or_test="train", dir=None, ext_params=None):
        super().__init__(train_or_test, dir, ext_params)
        root = Path(dir or ".")
        if not (root / "images").is_dir():
            raise FileNotFoundError(f"FolderSegmentation: {root / 'images'} does not exist; set data.{train_or_test}"
                                    f".dir to a folder with images/ and masks/")
        split_file = root / "splits" / f"{train_or_test}.txt"
        if split_file.is_file():
            names = [n.strip() for n in split_file.read_text().splitlines() if n.strip()]
        else:
            names = sorted(p.stem for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        self.images = {p.stem: p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        missing = [n for n in names if n not in self.images]
        if missing:
            raise FileNotFoundError(f"FolderSegmentation: {split_file} names images that are not in "
                                    f"{root / 'images'}: {missing[:5]}")
        self.ids = names
        self.root = root
        classes = root / "classes.txt"
        self.class_names = tuple(classes.read_text().split()) if classes.is_file() else None

    @property
    def size(self):
        return len(self.ids)

    def sample(self, id):
        name = self.ids[id]
        image = cv2.imread(str(self.images[name]), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"FolderSegmentation: cannot decode {self.images[name]} (sample {id})")
        mask_file = self.root / "masks" / f"{name}.png"
        with Image.open(mask_file) as im:  # PIL: palette PNGs give class indices, not colours
            mask = np.array(im, dtype=np.uint8)
        return {"image": cv2.cvtColor(image, cv2.COLOR_BGR2RGB), "segments": mask,
                "image_meta": {"id": id, "image_file": str(self.images[name]), "image_shape": mask.shape}}
