"""Train-time augmentation per batch: in the loader (``--augment-on loader``: MONAI transforms per volume,
then collated) against on the device (``--augment-on device``: depth sampling per volume in the loader,
then ``BatchAugmentation`` on the whole batch where the model trains), side by side.

    OMP_NUM_THREADS=1 python benchmarks/bench_augment.py --out benchmarks/bench_augment.json
    python benchmarks/bench_augment.py --device cuda --out bench_augment_gpu.json

A batch's volumes are random ``[1, D0, H, W]`` tensors standing for the cache's stage-1 output (D0
slices, already resized in-plane). Per input size, after warm-up batches, rounds alternate the two
ways (so that a change of machine load hits both alike); each way's figure is the median time to
turn the cached volumes into the training batch on ``--device``. A train step of the compact space's
default subnet on the same batch is timed beside them, for scale.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import default_collate

from nni_covid3d.data import Preprocessing
from nni_covid3d.data.batch_augment import BatchAugmentation
from nni_covid3d.data.transforms import per_access_transforms
from side_by_side import (  # beside this script
    SIZES, add_round_arguments, alternate, machine, make_model, save, synchronize, train_steps,
)


def measure(size: tuple[int, int, int], batch: int, slices: int, device: torch.device, warmup: int, rounds: int,
            steps: int) -> dict:
    depth, height, width = size
    cached = [{"image": torch.rand(1, slices, height, width), "label": i % 2} for i in range(batch)]
    loader_side = per_access_transforms(Preprocessing(depth=depth, height=height, width=width), train=True)
    device_preprocessing = Preprocessing(depth=depth, height=height, width=width, augment_on="device")
    depth_only = per_access_transforms(device_preprocessing, train=True)
    augmentation = BatchAugmentation.from_preprocessing(device_preprocessing.to_dict())
    loader_side.set_random_state(0)
    depth_only.set_random_state(0)

    def to_device(collated: dict) -> torch.Tensor:
        images = collated["image"].pin_memory() if device.type == "cuda" else collated["image"]
        return images.to(device, non_blocking=True)

    def in_loader(step: int) -> torch.Tensor:
        return to_device(default_collate([loader_side(dict(item)) for item in cached]))

    def on_device(step: int) -> torch.Tensor:
        images = to_device(default_collate([depth_only(dict(item)) for item in cached]))
        return augmentation(images, BatchAugmentation.generator(0, 0, step))

    def timed(way):
        def run(step: int) -> float:
            synchronize(device)
            start = time.perf_counter()
            out = way(step)
            synchronize(device)
            assert out.shape == (batch, 1, depth, height, width)
            return time.perf_counter() - start
        return run

    times, median = alternate({"loader": timed(in_loader), "device": timed(on_device)}, warmup, rounds, steps)
    return {"batch_s": times, "median_batch_s": median, "train_step_s": _train_step(size, batch, device, steps),
            "device_over_loader_time": median["device"] / median["loader"]}


def _train_step(size: tuple[int, int, int], batch: int, device: torch.device, steps: int) -> float:
    """Median train step (forward, backward, Adam) of the compact space's default subnet on ``batch`` volumes."""
    torch.manual_seed(0)
    model = make_model("default").to(device).train()
    x = torch.randn(batch, 1, *size, device=device)
    y = (torch.arange(batch) % 2).to(device)
    _, median = alternate(train_steps({"step": model}, x, y), 1, 1, steps)
    return median["step"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--slices", type=int, default=60, help="slices of a cached volume (D0)")
    add_round_arguments(parser, "batches per way", steps=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bench_augment.json"))
    args = parser.parse_args()

    device = torch.device(args.device)
    per_size = {name: measure(SIZES[name], args.batch, args.slices, device, args.warmup, args.rounds, args.steps)
                for name in args.sizes}
    result = {
        "batch": args.batch, "cached_slices": args.slices, "sizes": {name: list(SIZES[name]) for name in args.sizes},
        **machine(device), "results": per_size,
        "device_over_loader_time": {name: r["device_over_loader_time"] for name, r in per_size.items()},
    }
    result["summary"] = {name: {"loader_ms": 1e3 * r["median_batch_s"]["loader"],
                                "device_ms": 1e3 * r["median_batch_s"]["device"],
                                "train_step_ms": 1e3 * r["train_step_s"],
                                "device_over_loader": r["device_over_loader_time"]} for name, r in per_size.items()}
    save(result, args.out, ("summary", "load_average", "threads"))


if __name__ == "__main__":
    main()
