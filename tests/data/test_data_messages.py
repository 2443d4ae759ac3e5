"""Messages of the data layer a user reads: loader-key typos name the config path and the close key, a failing
transform's KeyError reads without nested quotes and says when sample() returned no image, and an empty split
without a split file is not told to fill one."""
from __future__ import annotations

from typing import Any

import pytest

from antgo.data import Dataset, Reader, build_dataloader
from antgo.data.reader import register
from antgo.engine import Trainer
from antgo.engine.loading import EmptySplitError, require_samples


@pytest.mark.parametrize("typo, close", [("samples_per_gpgu", "samples_per_gpu"), ("shufle", "shuffle"),
                                         ("Drop_Last", "drop_last")])
def test_loader_key_typo_names_the_config_path_and_the_close_key(tiny_seg_cfg, tmp_path, typo, close):
    tiny_seg_cfg["data"]["train_dataloader"][typo] = 2
    trainer = Trainer(tiny_seg_cfg, work_dir=str(tmp_path / "run"), device="cpu")
    with pytest.raises(TypeError) as info:
        trainer.config_dataloader()
    message = str(info.value)
    assert f"data.train_dataloader.{typo} is not a data loader setting. Did you mean '{close}'?" in message
    assert "Known: samples_per_gpu, workers_per_gpu, drop_last, shuffle" in message and "timeout" in message


def test_a_test_loader_typo_is_found_when_training_starts(tiny_seg_cfg, tmp_path):
    # antgo train never builds the test loader: without the check the typo would wait for `antgo test`
    tiny_seg_cfg["data"]["test_dataloader"] = dict(samples_per_gpu=1, shufle=False)
    with pytest.raises(TypeError, match=r"data\.test_dataloader\.shufle is not a data loader setting"):
        Trainer(tiny_seg_cfg, work_dir=str(tmp_path / "run"), device="cpu").config_dataloader()


def test_direct_build_dataloader_still_rejects_unknown_keys():
    with pytest.raises(TypeError, match=r"build_dataloader.workers is not a data loader setting.*'num_workers'"):
        build_dataloader(list(range(4)), workers=2)
    assert len(build_dataloader(list(range(4)), samples_per_gpu=2, timeout=0)) == 2  # DataLoader arguments pass


@register
class NoImageSample(Dataset):
    """A plugin whose sample() forgot the image."""

    @property
    def size(self) -> int:
        return 3

    def sample(self, id: int) -> dict[str, Any]:
        return {"picture": None, "image_meta": {"id": id}}


def test_transform_that_finds_no_image_says_sample_returned_none():
    reader = Reader(NoImageSample(), pipeline=[dict(type="ResizeS", target_dim=(8, 8))])
    with pytest.raises(KeyError) as info:
        reader[1]
    message = str(info.value)
    assert message == ("NoImageSample sample 1 (pipeline: ResizeS): transform #0 ResizeS failed: no image-like array "
                       "among ['image_meta', 'picture'] to take the size from; the data set's sample() returned no "
                       "'image' (its keys: ['image_meta', 'picture']): return the decoded image under 'image'")


def test_a_bare_missing_key_keeps_its_quotes_once():
    def needs_label(results: dict[str, Any]) -> dict[str, Any]:
        results["label"]
        return results

    reader = Reader(NoImageSample(), pipeline=[needs_label])
    with pytest.raises(KeyError, match=r"^NoImageSample sample 0 \(pipeline: needs_label\): transform #0 needs_label "
                                       r"failed: KeyError 'label'; the data set's sample\(\) returned no 'image'"):
        reader[0]


@register
class NothingHere(Dataset):
    @property
    def size(self) -> int:
        return 0


def test_empty_split_without_a_split_file_is_not_told_to_fill_one():
    with pytest.raises(EmptySplitError) as info:
        require_samples(Reader(NothingHere()), "data.val")
    assert str(info.value) == ("data.val has no samples. Point data.val.dir at the right folder, or remove data.val "
                               "from the config.")
