"""End-to-end training throughput: ``Trainer`` on JPEGs + the seed's train pipeline versus the bare loop.

A generated Pascal VOC tree (JPEG images with sides of 375-500 px, palette PNG masks, 21 classes) is read
by the seed config (``configs/pascal_voc/ddrketnetf_voc.py``: DDRKetNetF + SimpleHead, Rotation, ResizeS,
ColorDistort, RandomFlipImage, ToTensor, Normalize), trained for ``--iters`` iterations (``max_iters``: no
epoch-boundary stalls); the reference is ``bench/bare_loop.py`` (plain PyTorch, same model, batch and
optimizer, data already on the device). Interleaved rounds; prints img/s of both, the ratio and the time split
of the Trainer (waiting for data vs compute). A benchmark, not a test::

    .venv/bin/python bench/train_throughput.py                  # small on CPU (batch 4, 128 px)
    python bench/train_throughput.py --device cuda              # full size: batch 128, 256 px, bf16 + channels_last
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse  # noqa: E402
import gc  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, if not installed
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bare_loop import bare_loop, device_batches, make_model, make_optimizer  # noqa: E402

from antgo.engine import Trainer  # noqa: E402
from antgo.engine.hooks import Hook  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SEED_CONFIG = REPO / "configs" / "pascal_voc" / "ddrketnetf_voc.py"


def presets(device: torch.device) -> dict[str, int]:
    if device.type == "cuda":
        workers = max(1, (os.cpu_count() or 2) - 1)
        # the loader holds up to 2 batches per worker: the warm-up drains what it prefetched while the model
        # and cudnn got ready, and the timed window is twice that, so the rate is the steady state's
        warmup = round_up(2 * workers + 10, 5)
        return dict(batch=128, size=256, iters=round_up(4 * workers, 5), warmup=warmup, images=1024, workers=workers)
    return dict(batch=4, size=128, iters=8, warmup=3, images=48, workers=2)


def round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def make_data(root: Path, images: int) -> Path:
    from antgo.data.datasets.synthetic import make_voc_tree

    marker = root / f".complete_{images}"
    if not marker.exists():
        make_voc_tree(root, splits={"train": images}, size_range=(375, 500), num_classes=21, seed=0)
        marker.write_text("ok")
    return root


def seed_cfg(data_dir: Path, batch: int, size: int, workers: int, log_interval: int, cache: bool = False,
             extra: Sequence[str] = ()) -> Any:
    """The seed config verbatim except the paths, sizes, loader and the run length; no validation.
    ``cache``: the decoded-sample cache on (the workers decode each image once); ``extra``: more overrides."""
    from antgo.config import Config

    options = [f"data.train.dir={data_dir}", f"data.train.pipeline.1.target_dim=({size},{size})",
               f"data.train_dataloader.samples_per_gpu={batch}", f"data.train_dataloader.workers_per_gpu={workers}",
               "data.train.ext_params.aug=False", f"log_config.interval={log_interval}",
               "checkpoint_config.interval=0", "+checkpoint_config.save_last=False"]
    if cache:
        options.append("+data.train.cache=True")
    return Config.fromfile(str(SEED_CONFIG), cfg_options=[*options, *extra])


class Meter(Hook):
    """Times the Trainer after its warm-up, at log refreshes (where CUDA work is synchronised anyway)."""

    priority = 95

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.last_iter = warmup, 0.0, 0.0, 0
        self.images, self.data_time, self.step_time = 0, 0.0, 0.0

    def after_iter(self, trainer: Any) -> None:
        if not trainer.log_ready:
            return
        now, n = time.perf_counter(), trainer.iter - self.last_iter
        self.last_iter = trainer.iter
        if trainer.iter <= self.warmup:
            self.start = now
            return
        self.end = now
        self.images += n * int(trainer.train_loader.batch_size)
        self.data_time += trainer.log_vars["data_time"] * n
        self.step_time += trainer.log_vars["time"] * n


def trainer_run(cfg: Any, device: torch.device, iters: int, warmup: int, work_dir: str) -> Meter:
    trainer = Trainer(cfg, work_dir=work_dir, device=str(device))
    trainer.config_dataloader(with_validate=False)
    trainer.config_model()
    meter = Meter(warmup)
    trainer.register_hook(meter)
    trainer.start_train(max_iters=warmup + iters)
    del trainer
    gc.collect()  # its loader workers end now, not during the next round
    return meter


def run(device: torch.device, batch: int, size: int, iters: int, warmup: int, images: int, workers: int,
        rounds: int, data_dir: Path | None = None, cache: bool = False, extra: Sequence[str] = ()
        ) -> dict[str, float]:
    """Interleaved rounds of bare loop and Trainer; returns the medians (img/s), ratio and data-wait share.
    ``cache``: the Trainer reads through the decoded-sample cache (the warm-up should cover one pass);
    ``extra``: more config overrides for the Trainer."""
    tmp = tempfile.TemporaryDirectory(prefix="antgo_throughput_")
    root = make_data(Path(data_dir or tmp.name) / "voc", images)
    log_interval = max(1, min(5, warmup))  # warmup and iters should be multiples of it
    cfg = seed_cfg(root, batch, size, workers, log_interval, cache, extra)
    cuda = device.type == "cuda"
    model = make_model(device, channels_last=cuda)
    optimizer = make_optimizer(model, device)
    batches = device_batches(4, batch, size, 21, device, channels_last=cuda)
    bare_loop(model, optimizer, batches, warmup, device, bf16=cuda)
    bare_rates, trainer_rates, data_share = [], [], []
    for r in range(rounds):
        n, seconds = bare_loop(model, optimizer, batches, iters, device, bf16=cuda)
        bare_rates.append(n / seconds)
        meter = trainer_run(cfg, device, iters, warmup, os.path.join(tmp.name, f"run{r}"))
        trainer_rates.append(meter.images / max(meter.end - meter.start, 1e-9))
        data_share.append(meter.data_time / max(meter.step_time, 1e-9))
        print(f"round {r + 1}: bare {bare_rates[-1]:8.1f} img/s | trainer {trainer_rates[-1]:8.1f} img/s "
              f"(waiting for data {100 * data_share[-1]:.0f} % of the step time)", flush=True)
    tmp.cleanup()
    result = dict(bare=statistics.median(bare_rates), trainer=statistics.median(trainer_rates),
                  ratio=statistics.median(t / b for t, b in zip(trainer_rates, bare_rates)),
                  data_share=statistics.median(data_share))
    print(f"device {device} ({torch.get_num_threads()} threads, {workers} loader workers"
          f"{', decoded-sample cache' if cache else ''}), batch {batch}, "
          f"{size}x{size}, bf16+channels_last {cuda}, {iters} timed iterations per round: "
          f"bare {result['bare']:.1f} img/s, trainer {result['trainer']:.1f} img/s (medians); "
          f"trainer/bare = {result['ratio']:.3f}; time split of the trainer: waiting for data "
          f"{100 * result['data_share']:.0f} %, compute {100 * (1 - result['data_share']):.0f} %", flush=True)
    return result


def parser_with_defaults(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    for name in ("batch", "size", "iters", "warmup", "images", "workers"):
        parser.add_argument(f"--{name}", type=int, default=None, help="default: the device's preset")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=None, help="folder to keep the generated data set in")
    return parser


def main() -> None:
    args = parser_with_defaults(__doc__.splitlines()[0]).parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for handler in logging.getLogger().handlers:  # antgo's INFO lines would bury the figures
        handler.setLevel(logging.WARNING)
    device = torch.device(args.device)
    settings = presets(device)
    settings.update({k: v for k, v in vars(args).items() if k in settings and v is not None})
    run(device, rounds=args.rounds, data_dir=args.data, **settings)


if __name__ == "__main__":
    main()
