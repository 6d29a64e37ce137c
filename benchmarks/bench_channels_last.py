"""Steady-state train steps in the channels-first and the channels-last (``--channels-last on``)
memory format, side by side, for CovidNet3D-S subnets (and optionally the baselines).

    OMP_NUM_THREADS=1 python benchmarks/bench_channels_last.py --out benchmarks/bench_channels_last.json
    python benchmarks/bench_channels_last.py --device cuda --batch 8 --size 32 128 128 --models default mc3_18

Each model is built twice with the same weights; after warm-up steps, rounds alternate the two
formats (so that a change of machine load hits both alike). The figure per model is each format's
median step time and their ratio (channels-last / channels-first: below 1 is faster).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nni_covid3d.models import get_model
from nni_covid3d.search_spaces import CovidNet3DSpace, build_model, export_architecture, random_architecture
from nni_covid3d.training.memory_format import to_channels_last_3d

SPACE = {"preset": "S", "widths": [16, 24, 32, 48, 64, 96], "n_cells": [2, 2, 2, 1, 1, 1], "head_channels": 256}


def make_model(name: str) -> torch.nn.Module:
    """``default`` (the compact space's default subnet), ``random<N>`` (its N-th random subnet) or a baseline."""
    space = CovidNet3DSpace(num_classes=2, **SPACE)
    if name == "default":
        sample = {label: mutable.default() for label, mutable in space.simplify().items()}
        return build_model(export_architecture(space.config, sample))
    if name.startswith("random"):
        return build_model(random_architecture(space.config, seed=int(name[len("random"):])))
    return get_model(name, num_classes=2)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    """One forward/backward/step; seconds (the device synchronised)."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    sync()
    return time.perf_counter() - start


def measure(name: str, x: torch.Tensor, y: torch.Tensor, warmup: int, rounds: int, steps: int) -> dict:
    torch.manual_seed(0)
    first = make_model(name).to(x.device).train()
    models = {"channels_first": first, "channels_last": to_channels_last_3d(copy.deepcopy(first))}
    optimizers = {fmt: torch.optim.Adam(m.parameters(), 1e-3) for fmt, m in models.items()}
    with torch.no_grad():  # the same numbers up to float rounding
        gap = (models["channels_first"].eval()(x) - models["channels_last"].eval()(x)).abs().max().item()
    for model in models.values():
        model.train()
    times: dict[str, list[float]] = {fmt: [] for fmt in models}
    for fmt in models:
        for _ in range(warmup):
            train_step(models[fmt], optimizers[fmt], x, y)
    for _ in range(rounds):
        for fmt in models:
            times[fmt] += [train_step(models[fmt], optimizers[fmt], x, y) for _ in range(steps)]
    median = {fmt: statistics.median(values) for fmt, values in times.items()}
    return {"step_s": times, "median_step_s": median, "max_abs_logit_gap": gap,
            "last_over_first_time": median["channels_last"] / median["channels_first"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=["default", "random1", "random2"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=3, default=(16, 48, 48), metavar=("D", "H", "W"))
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per format")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per format per round")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bench_channels_last.json"))
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, *args.size, device=device)
    y = (torch.arange(args.batch) % 2).to(device)
    per_model = {name: measure(name, x, y, args.warmup, args.rounds, args.steps) for name in args.models}
    result = {
        "space": SPACE, "batch": args.batch, "input": list(args.size), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "threads": torch.get_num_threads(), "load_average": os.getloadavg(), "torch": torch.__version__,
        "models": per_model,
        "last_over_first_time": {name: r["last_over_first_time"] for name, r in per_model.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("last_over_first_time", "load_average", "threads")}))


if __name__ == "__main__":
    main()
