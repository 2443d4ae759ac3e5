"""One prepared GPU check (at most ~5 minutes): bare-loop and end-to-end img/s on the same card, same call.

Runs ``bench/train_throughput.py``'s measurement at full size (batch 128, 256 px, bf16 + channels_last, the
seed's augmentation chain on JPEGs of 375-500 px) and prints, besides the two rates and their ratio (goal
>= 0.90), what limits the end-to-end rate: the share of the step spent waiting for data, and how many host
syncs one training iteration makes (``torch.cuda.set_sync_debug_mode('warn')`` over a few iterations), the
GPU time of one batch's copy and device augmentation (CUDA events), one round without prefetching (copy and
augmentation between the steps instead of on a side stream during the previous one) and one round with the
decoded-sample cache on (the workers no longer decode: what is left of the data path). ``--json`` is written
after each phase, so a failure keeps the figures measured before it.
Needs torch, opencv and Pillow only (no prefect, no mlflow)::

    python bench/gpu_check.py                    # on a CUDA machine
    python bench/gpu_check.py --cpu-smoke        # a tiny run on the CPU, to check the script itself
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, if not installed
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_throughput import Meter, make_data, presets, round_up, run, seed_cfg  # noqa: E402

from antgo.data.cache import RAM_DIR  # noqa: E402
from antgo.engine import Trainer  # noqa: E402


def syncs_per_iteration(device: torch.device, data_dir: str, batch: int, size: int, workers: int,
                        images: int) -> float:
    """Host syncs per training iteration, counted by CUDA's sync debug mode over 10 iterations after warm-up
    (the log interval is 10, so one flush is included: a loop without per-step syncs reads about 0.1-0.3)."""
    cfg = seed_cfg(make_data(Path(data_dir) / "voc", images), batch, size, workers, 10)
    trainer = Trainer(cfg, work_dir=os.path.join(data_dir, "sync_run"), device=str(device))
    trainer.config_dataloader(with_validate=False)
    trainer.config_model()
    counted: list[int] = []

    class SyncCounter(Meter):
        def before_iter(self, trainer: Trainer) -> None:
            if trainer.iter == 10:
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("warn")
                self._catcher = warnings.catch_warnings(record=True)
                self._records = self._catcher.__enter__()
                warnings.simplefilter("always")

        def after_iter(self, trainer: Trainer) -> None:
            if trainer.iter == 20:
                torch.cuda.set_sync_debug_mode(0)
                counted.append(sum("synchroniz" in str(w.message) for w in self._records))
                self._catcher.__exit__(None, None, None)

    trainer.register_hook(SyncCounter(0))
    trainer.start_train(max_iters=20)
    return counted[0] / 10 if counted else float("nan")


def device_path_ms(device: torch.device, data_dir: str, batch: int, size: int, workers: int,
                   images: int, extra: list[str], repeats: int = 10) -> dict[str, float]:
    """GPU time (CUDA events) of one loader batch's copy to the device, and of the copy plus the device
    augmentation, on the default stream: what a step pays for its data when nothing overlaps it."""
    from antgo.engine.evaluation import move_to_device

    cfg = seed_cfg(make_data(Path(data_dir) / "voc", images), batch, size, workers, 10, extra=extra)
    trainer = Trainer(cfg, work_dir=os.path.join(data_dir, "path_run"), device=str(device))
    trainer.config_dataloader(with_validate=False)
    batch_cpu = next(iter(trainer.train_loader))
    cuda = device.type == "cuda"
    timed = {}
    for name, transform in (("copy_ms", None), ("copy_and_augment_ms", trainer.train_transform)):
        move_to_device(dict(batch_cpu), device, cuda, transform)  # warm-up (kernels, tables)
        if cuda:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            begin.record()
        start = time.perf_counter()
        for _ in range(repeats):
            move_to_device(dict(batch_cpu), device, cuda, transform)
        if cuda:
            end.record()
            torch.cuda.synchronize()
        timed[name] = (begin.elapsed_time(end) if cuda else 1000 * (time.perf_counter() - start)) / repeats
    timed["pinned"] = bool(batch_cpu["image"].is_pinned())
    timed["augmentation_on_device"] = trainer.train_transform is not None
    del trainer, batch_cpu
    gc.collect()  # its persistent loader workers end now, not during the next measured round
    return timed


def shm_free_gib() -> float:
    """Free space of /dev/shm, where loader workers hand their batches over (a small one makes them fail)."""
    try:
        return shutil.disk_usage(RAM_DIR).free / 2 ** 30
    except OSError:
        return float("nan")


def write_json(path: str | None, figures: dict) -> None:
    """The figures so far (written after each phase: a later failure keeps the earlier ones); NaN as null."""
    if path:
        clean = {k: (None if isinstance(v, float) and v != v else v) for k, v in figures.items()}
        Path(path).write_text(json.dumps(clean, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny CPU run (checks the script, no figures)")
    parser.add_argument("--data", default=None, help="folder for the generated data set (default: a temp dir)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the figures to this file (e.g. $OUT/gpu_check.json)")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.cpu_smoke:
        device = torch.device("cpu")
        settings = dict(batch=2, size=64, iters=2, warmup=1, images=8, workers=1)
        rounds = 1
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --cpu-smoke to check the script on a CPU")
        device = torch.device("cuda")
        settings, rounds = presets(device), args.rounds
        print(f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, {os.cpu_count()} CPU cores, "
              f"/dev/shm free {shm_free_gib():.1f} GiB", flush=True)
    figures: dict = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                     "torch": torch.__version__, "cpu_cores": os.cpu_count(), "shm_free_gib": shm_free_gib(),
                     "settings": settings}
    # --cpu-smoke: the device augmentation and prefetch paths too (on a CPU they are off by default)
    smoke = ["+data.train.device_augmentation=True"] if args.cpu_smoke else []
    with tempfile.TemporaryDirectory(prefix="antgo_gpu_check_") as tmp:
        data = args.data or tmp  # one generated data set for every measurement below
        result = figures["end_to_end"] = run(device, rounds=rounds, data_dir=data, extra=smoke, **settings)
        write_json(args.json, figures)
        path = figures["data_path"] = device_path_ms(device, data, settings["batch"], settings["size"],
                                                     settings["workers"], settings["images"], smoke)
        step_ms = 1000 * settings["batch"] / result["bare"]
        print(f"per batch on the {device.type}: copy {path['copy_ms']:.1f} ms, copy + augmentation "
              f"{path['copy_and_augment_ms']:.1f} ms; a bare step {step_ms:.1f} ms", flush=True)
        write_json(args.json, figures)
        # the same without prefetching (copy and augmentation between the steps): what the side stream buys
        figures["without_prefetch"] = run(device, rounds=1, data_dir=data,
                                          extra=[*smoke, "+device_prefetch=False"], **settings)
        write_json(args.json, figures)
        # the same with the workers' decoding taken out: shows whether decoding or the rest of the path limits it
        warmup = round_up(max(settings["warmup"], settings["images"] // settings["batch"] + 2), 5)  # fills it
        cached = figures["with_cache"] = run(device, rounds=1, data_dir=data, cache=True, extra=smoke,
                                             **dict(settings, warmup=warmup))
        write_json(args.json, figures)
        syncs = (syncs_per_iteration(device, data, settings["batch"], settings["size"], settings["workers"],
                                     settings["images"]) if device.type == "cuda" else float("nan"))
        figures["host_syncs_per_iteration"] = syncs
        write_json(args.json, figures)
    if device.type == "cuda":
        print(f"host syncs per training iteration: {syncs:.2f}", flush=True)
    if args.cpu_smoke:
        print("CPU smoke run: the script works; its figures say nothing about a GPU", flush=True)
        return
    verdict = "meets" if result["ratio"] >= 0.90 else "is below"
    print(f"end-to-end / bare = {result['ratio']:.3f}: {verdict} the 0.90 goal; the trainer waited for data "
          f"{100 * result['data_share']:.0f} % of its step time; with the decoded-sample cache "
          f"{cached['ratio']:.3f} (waiting {100 * cached['data_share']:.0f} %); without prefetching "
          f"{figures['without_prefetch']['ratio']:.3f}; "
          f"total {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
