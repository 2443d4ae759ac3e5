"""A data set plugin for your own segmentation data: a folder of images and masks.

Layout (``dir`` in the config)::

    <dir>/images/<name>.jpg|png|...  RGB images, any size (the suffixes `antgo predict` reads)
    <dir>/masks/<name>.png           one class index per pixel (0..N-1, 255 = ignore), same size as the image
    <dir>/classes.txt                one class name per line (optional; must list as many as the config)
    <dir>/splits/train.txt, val.txt  image names without extension, one per line (optional: without the
                                     folder every image is in every split)

Registered as ``FolderSegmentation``; the config loads this file through ``custom_imports``.
Change ``sample()`` to read another format: it returns ``image`` (RGB uint8, H x W x 3) and ``segments``
(uint8 H x W). The antgo readers it uses refuse truncated files, masks of another size, colour or 16-bit
masks and mask values that are not a class index or 255, naming the file.
"""
from pathlib import Path

from antgo.data.dataset import Dataset, read_class_names, split_names
from antgo.data.image_io import find_images, read_mask, read_rgb
from antgo.data.reader import register


@register
class FolderSegmentation(Dataset):
    """Segmentation samples from <dir>/images + <dir>/masks (see the module docstring for the layout).

    ``ext_params=dict(classes=[...])``: the config's class names (checked against classes.txt)."""

    def __init__(self, train_or_test="train", dir=None, ext_params=None):
        super().__init__(train_or_test, dir, ext_params)
        self.root = Path(dir or ".")
        self.images = find_images(self.root / "images")  # name -> file
        self.split_file = self.root / "splits" / f"{train_or_test}.txt"
        self.ids = split_names(self.split_file, self.images)
        self.class_names = read_class_names(self.root / "classes.txt", self.ext_params.get("classes"))

    @property
    def size(self):
        return len(self.ids)

    def image_files(self, id):
        """The files sample(id) reads: the Trainer checks them all before the first epoch."""
        name = self.ids[id]
        return [self.images[name], self.root / "masks" / f"{name}.png"]

    def sample(self, id):
        image_file, mask_file = self.image_files(id)
        image = read_rgb(image_file)
        num_classes = len(self.class_names) if self.class_names else None
        mask = read_mask(mask_file, image.shape[:2], num_classes)
        return {"image": image, "segments": mask,
                "image_meta": {"id": id, "image_file": str(image_file), "image_shape": mask.shape}}
