"""Steady-state train steps of a CovidNet3D-S subnet in fp32 and under bf16 autocast, side by side.

    OMP_NUM_THREADS=1 python benchmarks/bench_precision.py --out benchmarks/bench_precision.json

The compact space (widths 16 24 32 48 64 96, cells 2 2 2 1 1 1, head 256), its default subnet, batch 8
of 1x16x48x48, Adam. After warm-up steps, rounds alternate the two precisions (so that a change of
machine load hits both alike); the figure is each precision's median step time and their ratio.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from side_by_side import (  # beside this script
    SPACE, add_round_arguments, alternate, machine, make_model, save, train_steps,
)

PRECISIONS = {"32-true": None, "bf16-mixed": torch.bfloat16}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=3, default=(16, 48, 48), metavar=("D", "H", "W"))
    add_round_arguments(parser, "steps per precision", rounds=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bench_precision.json"))
    args = parser.parse_args()

    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, *args.size)
    y = torch.arange(args.batch) % 2
    models = {name: make_model("default").train() for name in PRECISIONS}
    models["bf16-mixed"].load_state_dict(models["32-true"].state_dict())
    times, median = alternate(train_steps(models, x, y, PRECISIONS), args.warmup, args.rounds, args.steps)
    result = {
        "space": SPACE, "batch": args.batch, "input": list(args.size), **machine(torch.device("cpu")),
        "step_s": times, "median_step_s": median,
        "bf16_over_fp32_time": median["bf16-mixed"] / median["32-true"],
    }
    save(result, args.out, ("median_step_s", "bf16_over_fp32_time", "load_average", "threads"))


if __name__ == "__main__":
    main()
