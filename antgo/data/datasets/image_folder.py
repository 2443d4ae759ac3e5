"""Image classification from a folder tree: ``dir/<split>/<class_name>/<image>``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from antgo.data.dataset import Dataset
from antgo.data.datasets._layout import check_split, layout_error
from antgo.data.datasets.pascal_voc import read_ids, read_rgb
from antgo.data.reader import register

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
LAYOUT = """\
  DIR/                               (dir in the config)
    train/<class_name>/*.jpg         (.jpg, .jpeg, .png or .bmp)
    val/<class_name>/*.jpg
    test/<class_name>/*.jpg          optional
    class_names.txt                  optional: one class name per line, in label order
                                     (default: the class folders of all splits, sorted)"""
HINT = ("antgo does not download data sets; generate a demo tree with "
        "`python -m antgo.data.datasets.synthetic demo DIR --task cls`.")


def _error(what: str) -> FileNotFoundError:
    return layout_error("ImageFolder", what, LAYOUT, HINT)


def folder_class_names(root: Path) -> tuple[str, ...]:
    """``class_names.txt``, else the sorted class folders found in any split (so labels agree across splits)."""
    names_file = root / "class_names.txt"
    if names_file.is_file():
        return tuple(read_ids(names_file))
    return tuple(sorted({p.name for split in SPLITS if (root / split).is_dir()
                         for p in (root / split).iterdir() if p.is_dir() and not p.name.startswith(".")}))


@register
class ImageFolder(Dataset):
    """``sample(i) -> {'image': RGB uint8 (H, W, 3), 'label': int, 'image_meta'}``.

    ``label`` indexes ``class_names``; ``image_meta.id`` is the path relative to the split folder.
    Files are listed once, sorted by class then name. Hidden files and other suffixes are ignored.
    """

    def __init__(self, train_or_test: str = "train", dir: str | Path | None = None,
                 ext_params: dict[str, Any] | None = None) -> None:
        super().__init__(train_or_test, dir, ext_params)
        if self.ext_params:
            logger.warning("ImageFolder: ignoring unknown ext_params %s", sorted(self.ext_params))
        check_split("ImageFolder", train_or_test, SPLITS)
        if dir is None:
            raise _error("dir is not set")
        self.root = Path(dir).expanduser()
        if not self.root.is_dir():
            raise _error(f"folder {str(self.root)!r} does not exist")
        self.split_dir = self.root / train_or_test
        if not self.split_dir.is_dir():
            raise _error(f"split folder {self.split_dir} does not exist")
        self.class_names = folder_class_names(self.root)
        index = {n: i for i, n in enumerate(self.class_names)}
        self.items: list[tuple[Path, int]] = []
        for class_dir in sorted(p for p in self.split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if class_dir.name not in index:
                raise ValueError(f"ImageFolder: class folder {class_dir} is not listed in "
                                 f"{self.root / 'class_names.txt'} ({list(self.class_names)}); add it or remove the folder")
            self.items += [(f, index[class_dir.name]) for f in sorted(class_dir.iterdir())
                           if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")]
        if not self.items:
            raise _error(f"no images in class folders under {self.split_dir}")
        logger.info("ImageFolder %s: %d images, %d classes in %s", train_or_test, len(self.items),
                    len(self.class_names), self.root)

    @property
    def size(self) -> int:
        return len(self.items)

    def _item(self, id: int) -> tuple[Path, int]:
        if not 0 <= int(id) < len(self.items):
            raise IndexError(f"ImageFolder {self.train_or_test}: index {id} out of range 0..{len(self.items) - 1}")
        return self.items[int(id)]

    def image_files(self, id: int) -> list[Path]:
        """The image ``sample(id)`` decodes (the pre-flight check reads its head and tail)."""
        return [self._item(id)[0]]

    def sample(self, id: int) -> dict[str, Any]:
        path, label = self._item(id)
        image = read_rgb(path)
        return {"image": image, "label": label,
                "image_meta": {"id": path.relative_to(self.split_dir).as_posix(), "image_file": str(path),
                               "image_shape": image.shape[:2]}}
