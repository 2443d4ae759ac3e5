"""Pascal VOC 2012 semantic segmentation, with the optional SBD (``SegmentationClassAug``) train set."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from antgo.console import log_once
from antgo.data.dataset import Dataset
from antgo.data.image_io import read_mask, read_rgb  # also importable from here, as before
from antgo.data.reader import register

logger = logging.getLogger(__name__)

VOC_CLASS_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
SUPPORTED_TASKS = ("SEGMENTATION",)  # and DETECTION, dispatched to pascal_voc_det in __new__
SPLITS = ("train", "val", "trainval", "test")

LAYOUT = """\
  DIR/                               (dir in the config)
    VOCdevkit/VOC2012/               (or DIR/VOC2012/, or DIR is the VOC2012 folder itself)
      JPEGImages/<id>.jpg
      SegmentationClass/<id>.png     palette PNG, index = class, 255 = void
      ImageSets/Segmentation/{train,val,trainval}.txt   one id per line
      class_names.txt                optional: one class name per line (default: the 21 VOC names)
    SegmentationClassAug/<id>.png    optional SBD grey masks (ext_params aug=True, train split)
    trainaug.txt                     optional SBD ids (beside SegmentationClassAug)"""


def _layout_error(what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"Pascal2012: {what}.\nExpected layout:\n{LAYOUT}\n"
        f"antgo does not download data sets: fetch VOCtrainval_11-May-2012.tar (and SBD's SegmentationClassAug "
        f"for aug=True) yourself, or generate the demo set with `python -m antgo.data.datasets.synthetic demo DIR`.")


def find_voc_root(dir: str | Path) -> Path:
    """The VOC2012 folder for ``dir`` = its parent of ``VOCdevkit``, its parent of ``VOC2012``, or the folder itself."""
    base = Path(dir).expanduser()
    if not base.is_dir():
        raise _layout_error(f"folder {str(base)!r} does not exist")
    for candidate in (base / "VOCdevkit" / "VOC2012", base / "VOC2012", base):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise _layout_error(f"no JPEGImages folder under {str(base)!r} (looked in VOCdevkit/VOC2012, VOC2012 and "
                        f"the folder itself)")


def read_ids(path: Path) -> list[str]:
    """Ids of a split file, one per line (blank lines and surrounding spaces ignored)."""
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


@register
class Pascal2012(Dataset):
    """VOC 2012 segmentation: ``sample(i) -> {'image', 'segments', 'image_meta'}``.

    ``image`` is RGB ``uint8`` (decoded with OpenCV, converted from BGR); ``segments`` ``uint8`` class
    indices with VOC's void boundary kept as 255. ``ext_params``: ``task_type`` ('SEGMENTATION'),
    ``aug`` (default True): the train split also takes the SBD masks of ``trainaug.txt`` ids that are
    neither in train (the VOC mask wins) nor in val. Nothing is downloaded.
    ``task_type='DETECTION'`` builds ``pascal_voc_det.Pascal2012Detection`` (XML boxes) instead.
    """

    def __new__(cls, train_or_test: str = "train", dir: str | Path | None = None,
                ext_params: dict[str, Any] | None = None) -> "Pascal2012":
        if cls is Pascal2012 and str((ext_params or {}).get("task_type", "")).upper() == "DETECTION":
            from antgo.data.datasets.pascal_voc_det import Pascal2012Detection  # a subclass: its __init__ runs

            cls = Pascal2012Detection
        return super().__new__(cls)

    def __init__(self, train_or_test: str = "train", dir: str | Path | None = None,
                 ext_params: dict[str, Any] | None = None) -> None:
        super().__init__(train_or_test, dir, ext_params)
        task = str(self.ext_params.get("task_type", "SEGMENTATION")).upper()
        if task not in SUPPORTED_TASKS:
            raise NotImplementedError(f"Pascal2012: task_type {task!r} is not supported; "
                                      f"supported: {SUPPORTED_TASKS + ('DETECTION',)}")
        unknown = sorted(set(self.ext_params) - {"task_type", "aug"})
        if unknown:
            logger.warning("Pascal2012: ignoring unknown ext_params %s", unknown)
        if train_or_test not in SPLITS:
            raise ValueError(f"Pascal2012: train_or_test must be one of {SPLITS}, got {train_or_test!r}")
        if dir is None:
            raise _layout_error("dir is not set")
        self.voc_root = find_voc_root(dir)
        split_dir = self.voc_root / "ImageSets" / "Segmentation"
        split_file = split_dir / f"{train_or_test}.txt"
        if not split_file.is_file():
            raise _layout_error(f"split file {split_file} does not exist")
        names_file = self.voc_root / "class_names.txt"
        self.class_names = tuple(read_ids(names_file)) if names_file.is_file() else VOC_CLASS_NAMES
        self.split_file = split_file  # named when the split is empty
        self.ids: list[str] = list(dict.fromkeys(read_ids(split_file)))
        # id -> mask path; SBD ids point into SegmentationClassAug.
        self._masks = {i: self.voc_root / "SegmentationClass" / f"{i}.png" for i in self.ids}
        self.aug = self.ext_params.get("aug", True)
        if not isinstance(self.aug, bool):  # a string "False" would otherwise switch SBD on
            raise ValueError(f"Pascal2012: ext_params.aug must be True or False, got {self.aug!r}")
        self.num_sbd = 0
        if self.aug and train_or_test == "train":
            self._add_sbd(split_dir)
        log_once(logger, logging.INFO, "Pascal2012 %s: %d samples (%d from SBD) in %s", train_or_test,
                 len(self.ids), self.num_sbd, self.voc_root)

    def _sbd_candidates(self) -> list[Path]:
        base = Path(self.dir).expanduser()
        chain = [base, self.voc_root, self.voc_root.parent, self.voc_root.parent.parent]
        return list(dict.fromkeys(p.resolve() for p in chain))

    def _add_sbd(self, split_dir: Path) -> None:
        places = self._sbd_candidates()
        aug_dir = next((p / "SegmentationClassAug" for p in places if (p / "SegmentationClassAug").is_dir()), None)
        list_file = next((p / "trainaug.txt" for p in places if (p / "trainaug.txt").is_file()), None)
        if aug_dir is None or list_file is None:
            logger.warning("Pascal2012: aug=True but no %s found under %s; using the VOC train split only",
                           "SegmentationClassAug/" if aug_dir is None else "trainaug.txt", [str(p) for p in places])
            return
        val_file = split_dir / "val.txt"
        excluded = set(self.ids) | (set(read_ids(val_file)) if val_file.is_file() else set())
        extra = [i for i in dict.fromkeys(read_ids(list_file)) if i not in excluded]
        for i in extra:
            self._masks[i] = aug_dir / f"{i}.png"
        self.ids.extend(extra)
        self.num_sbd = len(extra)

    @property
    def size(self) -> int:
        return len(self.ids)

    def _image_file(self, id: int) -> tuple[str, Path]:
        if not 0 <= int(id) < len(self.ids):
            raise IndexError(f"Pascal2012 {self.train_or_test}: index {id} out of range 0..{len(self.ids) - 1}")
        sid = self.ids[int(id)]
        return sid, self.voc_root / "JPEGImages" / f"{sid}.jpg"

    def image_files(self, id: int) -> list[Path]:
        """The files ``sample(id)`` decodes (the pre-flight check reads their heads and tails): the JPEG and
        its mask (a test split's missing mask is left out, as ``sample`` leaves it out)."""
        sid, image_file = self._image_file(id)
        mask_file = self._masks[sid]
        return [image_file] + ([mask_file] if self.train_or_test != "test" or mask_file.is_file() else [])

    def _read_image(self, id: int) -> tuple[str, dict[str, Any]]:
        """(image id, {'image', 'image_meta'}) of sample ``id``: the part every task form reads the same way."""
        sid, image_file = self._image_file(id)
        image = read_rgb(image_file)
        return sid, {"image": image,
                     "image_meta": {"id": sid, "image_file": str(image_file), "image_shape": image.shape[:2]}}

    def sample(self, id: int) -> dict[str, Any]:
        sid, out = self._read_image(id)
        image = out["image"]
        mask_file = self._masks[sid]
        if mask_file.is_file():
            out["segments"] = read_mask(mask_file, image.shape[:2], len(self.class_names))
        elif self.train_or_test != "test":
            raise FileNotFoundError(f"mask file {mask_file} for id {sid!r} does not exist")
        return out
