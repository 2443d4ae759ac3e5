"""The reference training loop: plain PyTorch, nothing from antgo but the model class.

Same model, loss (the model's own ``forward_train``), optimizer and batch as the seed config; the data is
generated once and already on the device; bf16 autocast + channels_last on CUDA. Other benchmarks import
:func:`bare_loop` and :func:`device_batches` to measure against it in the same run. A benchmark, not a test::

    .venv/bin/python bench/bare_loop.py [--device cpu|cuda] [--batch 8] [--size 128] [--iters 20] [--rounds 3]
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout, if not installed

import torch  # noqa: E402

from antgo.models.segmentors.encoder_decoder import EncoderDecoder  # noqa: E402  (the model class only)

# the seed config's model (configs/pascal_voc/ddrketnetf_voc.py) and optimizer
SEED_MODEL = dict(backbone=dict(type="DDRKetNetF", in_channels=3),
                  decode_head=dict(type="SimpleHead", in_channels=32, channels=32, out_channels=21, ignore_index=255))
SEED_SGD = dict(lr=0.05, weight_decay=5e-4, momentum=0.9, nesterov=True)


def make_model(device: torch.device, channels_last: bool, model_cfg: dict | None = None) -> torch.nn.Module:
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # what the Trainer does on CUDA
    model = EncoderDecoder(**(model_cfg or SEED_MODEL)).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def make_optimizer(model: torch.nn.Module, device: torch.device) -> torch.optim.Optimizer:
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.SGD(model.parameters(), **SEED_SGD, **fused)


def device_batches(n: int, batch: int, size: int, classes: int, device: torch.device,
                   channels_last: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` (image, mask) batches generated on ``device``: normalised float images, int64 masks."""
    generator = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        image = torch.randn(batch, 3, size, size, generator=generator).to(device)
        if channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        mask = torch.randint(0, classes, (batch, 1, size, size), generator=generator).to(device)
        out.append((image, mask))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
              batches: list[tuple[torch.Tensor, torch.Tensor]], iters: int, device: torch.device,
              bf16: bool) -> tuple[int, float]:
    """``iters`` steps over ``batches`` (cycled); returns (images, seconds). The loss is read once, at the end."""
    model.train()
    sync(device)
    start = time.perf_counter()
    images = 0
    loss = torch.zeros((), device=device)
    for i in range(iters):
        image, mask = batches[i % len(batches)]
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"):
            outputs = model.forward_train(image=image, segments=mask)
        loss = sum(v for k, v in outputs.items() if "loss" in k)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        images += image.shape[0]
    final = float(loss.detach())  # one host read, as any loop ends with
    sync(device)
    assert final == final, "the bare loop diverged"
    return images, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None, help="default: 128 on CUDA, 8 on CPU")
    parser.add_argument("--size", type=int, default=None, help="default: 256 on CUDA, 128 on CPU")
    parser.add_argument("--iters", type=int, default=None, help="default: 50 on CUDA, 10 on CPU")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batch, size = args.batch or (128 if cuda else 8), args.size or (256 if cuda else 128)
    iters = args.iters or (50 if cuda else 10)
    model = make_model(device, channels_last=cuda)
    optimizer = make_optimizer(model, device)
    batches = device_batches(4, batch, size, 21, device, channels_last=cuda)
    bare_loop(model, optimizer, batches, 3, device, bf16=cuda)  # warm-up (cudnn autotune, allocator)
    rates = []
    for r in range(args.rounds):
        images, seconds = bare_loop(model, optimizer, batches, iters, device, bf16=cuda)
        rates.append(images / seconds)
        print(f"round {r + 1}: {images} images in {seconds:.2f} s: {rates[-1]:.1f} img/s")
    print(f"bare loop on {device} ({torch.get_num_threads()} threads), batch {batch}, {size}x{size}, "
          f"bf16+channels_last {cuda}: median {statistics.median(rates):.1f} img/s")


if __name__ == "__main__":
    main()
