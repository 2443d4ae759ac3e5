"""Trainer overhead: iterations/s of ``Trainer.start_train`` versus a bare PyTorch loop.

Same model class, batch, in-memory data, optimizer and seed, in one process, interleaved rounds (bare,
trainer, bare, trainer, ...). The bare loop is plain PyTorch (a ``torch.utils.data.DataLoader`` over a
``TensorDataset``, ``torch.optim.SGD``, the loss summed by hand, the loss read once at the end): nothing from
antgo but the model class, so every cost of the Trainer (reader, collate, hooks, logging, checks) shows.
Prints each round and the median ratio trainer / bare (goal >= 0.98). A benchmark, not a test::

    .venv/bin/python bench/trainer_overhead.py [--rounds 3] [--iters 60] [--size 64] [--batch 8] [--device cpu]
                                               [--threads N]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP, as the CLI does

import argparse  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, if not installed

import numpy as np  # noqa: E402
import torch  # noqa: E402

import antgo.models  # noqa: E402,F401  (registers the models)
from antgo.data.dataset import Dataset  # noqa: E402
from antgo.engine import Trainer  # noqa: E402
from antgo.models.segmentors.encoder_decoder import EncoderDecoder  # noqa: E402
from antgo.registry import DATASETS  # noqa: E402

logger = logging.getLogger("bench.trainer_overhead")


@DATASETS.register_module()
class InMemorySegData(Dataset):
    """Random images and masks generated once and held in memory (no decoding, no augmentation)."""

    def __init__(self, train_or_test: str = "train", dir: str | None = None, ext_params: dict | None = None,
                 num: int = 64, size: int = 64, classes: int = 4) -> None:
        super().__init__(train_or_test, dir, ext_params)
        rng = np.random.default_rng(0)
        self.images = rng.standard_normal((num, 3, size, size)).astype(np.float32)
        self.masks = rng.integers(0, classes, size=(num, 1, size, size)).astype(np.uint8)

    @property
    def size(self) -> int:
        return len(self.images)

    def sample(self, id: int) -> dict[str, Any]:
        return {"image": self.images[id], "segments": self.masks[id]}


def make_cfg(args: argparse.Namespace) -> dict[str, Any]:
    num = args.iters * args.batch
    return dict(
        seed=0,
        model=dict(type="EncoderDecoder", backbone=dict(type="SimpleConvNet", in_channels=3, channels=(16, 32, 64)),
                   decode_head=dict(type="SimpleHead", in_channels=64, channels=32, out_channels=4)),
        optimizer=dict(type="SGD", lr=0.01, momentum=0.9),
        lr_config=dict(policy="CosineAnnealing", min_lr=0.0),
        log_config=dict(interval=50),
        checkpoint_config=dict(interval=0, save_last=False),  # no checkpoint writes inside the timed loop
        data=dict(train=dict(type="InMemorySegData", num=num, size=args.size),
                  train_dataloader=dict(samples_per_gpu=args.batch, workers_per_gpu=0, shuffle=True)),
    )


def bare_loop(cfg: dict[str, Any], device: torch.device, epochs: int) -> tuple[int, float, float]:
    """The loop a user would write by hand in plain PyTorch; returns (iterations, wall s, CPU s)."""
    torch.manual_seed(0)
    model_cfg = {k: v for k, v in cfg["model"].items() if k != "type"}
    model = EncoderDecoder(**model_cfg).to(device)
    opt_cfg = {k: v for k, v in cfg["optimizer"].items() if k != "type"}
    optimizer = torch.optim.SGD(model.parameters(), **opt_cfg)
    data = InMemorySegData(**{k: v for k, v in cfg["data"]["train"].items() if k != "type"})
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(data.images), torch.from_numpy(data.masks))
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg["data"]["train_dataloader"]["samples_per_gpu"],
                                         shuffle=True, generator=torch.Generator().manual_seed(0))
    model.train()
    iters, start, cpu = 0, time.perf_counter(), time.process_time()
    loss = torch.zeros(())
    for _ in range(epochs):
        for image, mask in loader:
            image, mask = image.to(device, non_blocking=True), mask.to(device, non_blocking=True)
            outputs = model.forward_train(image=image, segments=mask)
            loss = sum(v for k, v in outputs.items() if "loss" in k)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            iters += 1
    float(loss.detach())  # the one host read of the run
    return iters, time.perf_counter() - start, time.process_time() - cpu


def trainer_loop(cfg: dict[str, Any], device: torch.device, epochs: int) -> tuple[int, float, float]:
    with tempfile.TemporaryDirectory() as work_dir:
        trainer = Trainer(cfg, work_dir=work_dir, device=str(device))
        trainer.config_dataloader(with_validate=False)
        trainer.config_model()
        start, cpu = time.perf_counter(), time.process_time()
        result = trainer.start_train(max_epochs=epochs)
        return result["iters"], time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=60, help="iterations per epoch")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("antgo").setLevel(logging.WARNING)  # keep the output to the benchmark lines
    device = torch.device(args.device)
    cfg = make_cfg(args)
    bare_loop(cfg, device, 1)  # warm-up: allocator, kernels, lazy imports
    rates: dict[str, list[float]] = {"bare": [], "trainer": []}
    cpu_rates: dict[str, list[float]] = {"bare": [], "trainer": []}
    for r in range(args.rounds):
        for name, fn in (("bare", bare_loop), ("trainer", trainer_loop)):
            iters, seconds, cpu_seconds = fn(cfg, device, args.epochs)
            rates[name].append(iters / seconds)
            cpu_rates[name].append(iters / cpu_seconds)
            logger.info("round %d %-7s %4d iters in %6.2f s (%6.2f s CPU): %7.2f it/s", r + 1, name, iters, seconds,
                        cpu_seconds, rates[name][-1])
    ratio = statistics.median(t / b for t, b in zip(rates["trainer"], rates["bare"]))
    cpu_ratio = statistics.median(t / b for t, b in zip(cpu_rates["trainer"], cpu_rates["bare"]))
    logger.info("device %s (%d threads), batch %d, %dx%d: bare %.2f it/s, trainer %.2f it/s (medians); "
                "trainer/bare = %.3f wall, %.3f per CPU second (goal >= 0.98)", device, torch.get_num_threads(),
                args.batch, args.size, args.size, statistics.median(rates["bare"]),
                statistics.median(rates["trainer"]), ratio, cpu_ratio)

if __name__ == "__main__":
    main()
