"""Strict image decoding (truncated/corrupt files name file and index), skip_bad_samples, the sample cache."""
import logging
import os

import numpy as np
import pytest
import torch

from antgo.data import Dataset, Reader, build_dataloader, build_dataset
from antgo.data.cache import SampleCache
from antgo.data.datasets.synthetic import make_voc_tree
from antgo.data.image_io import CorruptImageError, read_rgb


@pytest.fixture
def voc(tmp_path):
    root = make_voc_tree(tmp_path / "voc", splits={"train": 8, "val": 1}, size_range=(24, 32), num_classes=3, seed=2)
    return root / "VOCdevkit" / "VOC2012"


def train_cfg(voc, **extra):
    return dict(type="Pascal2012", train_or_test="train", dir=str(voc), ext_params=dict(aug=False),
                pipeline=[dict(type="ResizeS", target_dim=(16, 16)), dict(type="ToTensor", keys=["image"])],
                inputs_def=dict(fields=["image", "segments"]), **extra)


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def jpeg(voc, k):
    return sorted((voc / "JPEGImages").glob("*.jpg"))[k]


def test_truncated_jpeg_names_the_file_and_the_index(voc):
    bad = jpeg(voc, 3)
    truncate(bad)
    reader = build_dataset(train_cfg(voc))
    with pytest.raises(CorruptImageError) as info:
        reader[3]
    message = str(info.value)
    assert str(bad) in message and "Pascal2012.sample(3)" in message and "Premature end of JPEG file" in message
    assert "skip_bad_samples" in message
    assert reader[2]["image"].shape == (3, 16, 16)  # the others still load


def test_garbage_image_and_truncated_mask_name_their_files(voc, tmp_path):
    garbage = tmp_path / "x.jpg"
    garbage.write_bytes(b"\xff\xd8" + os.urandom(300) + b"\xff\xd9")
    with pytest.raises(CorruptImageError, match=f"cannot decode image {garbage}"):
        read_rgb(garbage)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_rgb(tmp_path / "missing.jpg")
    mask = sorted((voc / "SegmentationClass").glob("*.png"))[1]
    truncate(mask, 0.6)
    with pytest.raises(CorruptImageError, match=f"Pascal2012.sample\\(1\\) failed: cannot decode mask {mask}"):
        build_dataset(train_cfg(voc))[1]


def test_opencv_without_rgb_decoding_gives_the_same_rgb_pixels(voc, monkeypatch):
    """OpenCV before 4.11 has no IMREAD_COLOR_RGB: the reader decodes BGR and converts."""
    import cv2

    from antgo.data import image_io

    path = jpeg(voc, 1)
    rgb = read_rgb(path)
    monkeypatch.setattr(image_io, "_DECODES_RGB", False)
    monkeypatch.setattr(image_io, "_DECODE_FLAG", cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(read_rgb(path), rgb)
    np.testing.assert_array_equal(rgb, cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))


def test_bytes_after_the_end_marker_are_accepted(voc):
    path = jpeg(voc, 0)
    before = read_rgb(path)
    path.write_bytes(path.read_bytes() + b"\x00" * 100)
    np.testing.assert_array_equal(read_rgb(path), before)


def test_skip_bad_samples_counts_once_across_workers(voc, caplog):
    truncate(jpeg(voc, 2))
    truncate(jpeg(voc, 5), 0.3)
    reader = build_dataset(train_cfg(voc, skip_bad_samples=True))
    loader = build_dataloader(reader, samples_per_gpu=2, workers_per_gpu=2, multiprocessing_context="fork")
    for _ in range(2):  # two epochs: a known bad sample is not read again
        assert sum(len(b["image"]) for b in loader) == 8
    assert reader.num_skipped == 2 and reader.skipped_indices == [2, 5]
    with caplog.at_level(logging.WARNING, logger="antgo.data.reader"):
        fresh = build_dataset(train_cfg(voc, skip_bad_samples=True))
        assert fresh[2]["image"].shape == (3, 16, 16)  # sample 3 stands in for 2
    assert "skipping sample 2 (1 skipped so far)" in caplog.text and str(jpeg(voc, 2)) in caplog.text


def test_skip_bad_samples_gives_up_instead_of_retrying_forever(voc):
    for k in range(8):
        truncate(jpeg(voc, k))
    reader = build_dataset(train_cfg(voc, skip_bad_samples=True))
    with pytest.raises(RuntimeError, match="no good sample among the 8 indices from 0 on"):
        reader[0]
    assert reader.num_skipped == 8
    with pytest.raises(RuntimeError):
        reader[4]  # known bad ones are not read again, the search stays bounded


def test_skip_bad_samples_does_not_hide_bugs(voc):
    def broken(results):
        raise TypeError("a bug")

    reader = Reader(build_dataset(train_cfg(voc)).dataset, pipeline=[broken], skip_bad_samples=True)
    with pytest.raises(TypeError, match="a bug"):
        reader[0]
    with pytest.raises(ValueError, match="skip_bad_samples must be True or False"):
        Reader(reader.dataset, skip_bad_samples="yes")


class Counting(Dataset):
    def __init__(self, n=6):
        super().__init__()
        self.n, self.calls = n, 0

    @property
    def size(self):
        return self.n

    def sample(self, id):
        self.calls += 1
        return {"image": np.full((4, 5, 3), id, np.uint8), "image_meta": {"id": id}}


def test_cache_serves_decoded_samples_to_every_worker():
    ds = Counting()
    reader = Reader(ds, cache=True)
    folder = reader.cache.folder
    loader = build_dataloader(reader, samples_per_gpu=3, workers_per_gpu=2, multiprocessing_context="fork")
    first = [b["image"].clone() for b in loader]
    assert len(reader.cache) == 6 and ds.calls == 0  # the workers decoded and stored; nothing in this process
    for i in range(6):
        assert reader[i]["image"][0, 0, 0] == i and reader[i]["image_meta"] == {"id": i}
    assert ds.calls == 0
    assert all(torch.equal(a, b["image"]) for a, b in zip(first, loader))
    reader.cache.close()
    assert not folder.exists()


def test_cache_folder_from_the_config_is_kept_and_reused(voc, tmp_path):
    cfg = train_cfg(voc, cache=str(tmp_path / "cache"))
    reader = build_dataset(cfg)
    reference = [reader[i]["image"] for i in range(8)]
    again = build_dataset(cfg)
    again.dataset.sample = None  # would fail if called: everything comes from the cache
    assert all((again[i]["image"] == reference[i]).all() for i in range(8))
    assert len(SampleCache.create(str(tmp_path / "cache"), again.dataset)) == 8
    with pytest.raises(ValueError, match="cache must be True, False or a folder path"):
        Reader(again.dataset, cache=3)


def test_cache_stops_writing_when_the_file_system_is_nearly_full(caplog):
    ds = Counting()
    reader = Reader(ds, cache=True)
    reader.cache.reserve = 2 ** 62  # as if the folder's file system had no room left
    with caplog.at_level(logging.WARNING, logger="antgo.data.cache"):
        assert reader[0]["image"][0, 0, 0] == 0 and reader[1]["image"][0, 0, 0] == 1
    assert reader.cache.full and len(reader.cache) == 0 and ds.calls == 2
    assert caplog.text.count("file system nearly full") == 1
    reader.cache.close()


def test_the_ranks_of_a_launched_job_share_one_cache_folder(monkeypatch):
    """Two local ranks of one torchrun job: one folder (the data once in RAM); the first rank to end removes it
    and the other goes on decoding without an error."""
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job/7")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    ds = Counting()
    rank0, rank1 = Reader(ds, cache=True), Reader(ds, cache=True)
    assert rank0.cache.folder == rank1.cache.folder and "job_7" in rank0.cache.folder.name
    rank0[0]
    assert rank1[0]["image"][0, 0, 0] == 0 and ds.calls == 1  # rank 1 read what rank 0 decoded
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "another-job")
    assert Reader(ds, cache=True).cache.folder != rank0.cache.folder
    rank0.cache.close()
    assert not rank1.cache.folder.exists()
    assert rank1[1]["image"][0, 0, 0] == 1 and rank1.cache.full  # decoded; caching stopped, no error
