"""Out of memory in training, validation or the test: the error keeps PyTorch's message and gets a note naming
the batch size to lower (the split's config key and a smaller value) and the checkpoints kept; a loader worker
that dies (the kernel's out-of-memory killer, most often) gets one naming the workers to lower."""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from antgo.engine import Tester, Trainer
from antgo.engine.memory import is_out_of_memory
from antgo.registry import TRANSFORMS


@TRANSFORMS.register_module()
class EndsItsWorker:
    """Kills the loader worker running it with SIGKILL, as the kernel's out-of-memory killer does."""

    def __call__(self, results: dict[str, Any]) -> dict[str, Any]:
        if torch.utils.data.get_worker_info() is not None:
            os.kill(os.getpid(), signal.SIGKILL)
        return results


def _allocating_too_much_when(model: torch.nn.Module, when: Any) -> None:
    """The module's forward asks the allocator for 1 PiB (more than any address space) when ``when()``."""
    forward = model.forward

    def hungry(*args: Any, **kwargs: Any) -> Any:
        if when():
            torch.empty(2 ** 50, dtype=torch.uint8)
        return forward(*args, **kwargs)

    model.forward = hungry


def _trainer(cfg: dict, work: Path) -> Trainer:
    cfg["checkpoint_config"] = dict(interval=1)
    trainer = Trainer(cfg, work_dir=str(work), device="cpu")
    trainer.config_dataloader()
    trainer.config_model()
    return trainer


def test_out_of_memory_in_training_names_the_batch_to_lower(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    trainer = _trainer(tiny_seg_cfg, tmp_path / "run")
    _allocating_too_much_when(trainer.model.backbone, lambda: trainer.model.training and trainer.iter == 4)
    with pytest.raises(RuntimeError, match="DefaultCPUAllocator: can't allocate memory") as err:
        trainer.start_train(max_epochs=2)
    notes = "\n".join(err.value.__notes__)
    assert ("out of memory on cpu in training (epoch 2, iter 2/3 (global iter 5)), with batches of 4 samples: "
            "lower data.train_dataloader.samples_per_gpu (e.g. --cfg-options "
            "data.train_dataloader.samples_per_gpu=2) and scale the learning rate with it") in notes
    assert "expandable_segments:True" in notes
    assert f"the last good checkpoint is {tmp_path / 'run' / 'latest.pth'}" in notes
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))


def test_out_of_memory_in_validation_names_the_val_batch(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    """Found by the one-batch validation check before the first epoch."""
    tiny_seg_cfg["data"]["val_dataloader"] = dict(samples_per_gpu=3)
    trainer = _trainer(tiny_seg_cfg, tmp_path / "run")
    _allocating_too_much_when(trainer.model.backbone, lambda: not trainer.model.training)
    with pytest.raises(RuntimeError, match="can't allocate memory") as err:
        trainer.start_train(max_epochs=1)
    memory_notes = [n for n in err.value.__notes__ if n.startswith("out of memory")]
    assert len(memory_notes) == 1 and memory_notes[0].startswith(
        "out of memory on cpu in validation (val check), with batches of 3 samples: lower "
        "data.val_dataloader.samples_per_gpu (e.g. --cfg-options data.val_dataloader.samples_per_gpu=1). ")


def test_out_of_memory_in_the_test_names_the_test_batch(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    trainer = _trainer(tiny_seg_cfg, tmp_path / "run")
    trainer.start_train(max_epochs=1)
    tiny_seg_cfg["data"]["test"] = tiny_seg_cfg["data"]["val"]
    tester = Tester(tiny_seg_cfg, str(tmp_path / "test"), device="cpu")
    tester.config_model(str(tmp_path / "run" / "latest.pth"))
    _allocating_too_much_when(tester.model.backbone, lambda: True)
    with pytest.raises(RuntimeError, match="can't allocate memory") as err:
        tester.evaluate()
    assert any("in the test, with batches of" in n and "data.test_dataloader.samples_per_gpu" in n
               for n in err.value.__notes__)


def test_a_loader_worker_killed_names_the_workers_to_lower(tiny_seg_cfg: dict, tmp_path: Path) -> None:
    tiny_seg_cfg["data"]["train"]["pipeline"].append(dict(type="EndsItsWorker"))
    tiny_seg_cfg["data"]["train_dataloader"] = dict(tiny_seg_cfg["data"]["train_dataloader"], workers_per_gpu=2)
    trainer = _trainer(tiny_seg_cfg, tmp_path / "run")
    with pytest.raises(RuntimeError, match=r"DataLoader worker \(pid") as err:
        trainer.start_train(max_epochs=1)
    notes = "\n".join(err.value.__notes__)
    assert "a data loader worker died in training (epoch 1, iter 1/3 (global iter 1)) (2 workers, batches of 4 " \
           "samples). Most often the kernel's out-of-memory killer ended it" in notes
    assert "Lower data.train_dataloader.workers_per_gpu" in notes and "workers_per_gpu=0 to see where" in notes
