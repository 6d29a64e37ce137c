"""Steady-state train steps of a CovidNet3D-S subnet in fp32 and under bf16 autocast, side by side.

    OMP_NUM_THREADS=1 python benchmarks/bench_precision.py --out benchmarks/bench_precision.json

The compact space (widths 16 24 32 48 64 96, cells 2 2 2 1 1 1, head 256), its default subnet, batch 8
of 1x16x48x48, Adam. After warm-up steps, rounds alternate the two precisions (so that a change of
machine load hits both alike); the figure is each precision's median step time and their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nni_covid3d.search_spaces import CovidNet3DSpace, build_model, export_architecture

SPACE = {"preset": "S", "widths": [16, 24, 32, 48, 64, 96], "n_cells": [2, 2, 2, 1, 1, 1], "head_channels": 256}
PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16}


def subnet() -> torch.nn.Module:
    """The default subnet of the compact space (two classes)."""
    space = CovidNet3DSpace(num_classes=2, **SPACE)
    sample = {label: mutable.default() for label, mutable in space.simplify().items()}
    return build_model(export_architecture(space.config, sample))


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               dtype: torch.dtype | None) -> float:
    """One forward/backward/step (autocast to ``dtype`` when given); seconds."""
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        loss = F.cross_entropy(model(x).float(), y)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=3, default=(16, 48, 48), metavar=("D", "H", "W"))
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per precision")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per precision per round")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bench_precision.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, *args.size)
    y = torch.arange(args.batch) % 2
    models = {name: subnet().train() for name in PRECISIONS}
    models["bf16-mixed"].load_state_dict(models["32-true"].state_dict())
    optimizers = {name: torch.optim.Adam(m.parameters(), 1e-3) for name, m in models.items()}
    times: dict[str, list[float]] = {name: [] for name in PRECISIONS}
    for name, dtype in PRECISIONS.items():
        for _ in range(args.warmup):
            train_step(models[name], optimizers[name], x, y, dtype)
    for _ in range(args.rounds):
        for name, dtype in PRECISIONS.items():
            times[name] += [train_step(models[name], optimizers[name], x, y, dtype) for _ in range(args.steps)]
    median = {name: statistics.median(values) for name, values in times.items()}
    result = {
        "space": SPACE, "batch": args.batch, "input": list(args.size), "device": "cpu",
        "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
        "load_average": os.getloadavg(), "torch": torch.__version__,
        "step_s": times, "median_step_s": median,
        "bf16_over_fp32_time": median["bf16-mixed"] / median["32-true"],
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median_step_s", "bf16_over_fp32_time", "load_average", "threads")}))


if __name__ == "__main__":
    main()
