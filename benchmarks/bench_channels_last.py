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
from pathlib import Path

import torch

from nni_covid3d.training.memory_format import to_channels_last_3d
from side_by_side import (  # beside this script
    SPACE, add_round_arguments, alternate, machine, make_model, save, train_steps,
)


def measure(name: str, x: torch.Tensor, y: torch.Tensor, warmup: int, rounds: int, steps: int) -> dict:
    torch.manual_seed(0)
    first = make_model(name).to(x.device).train()
    models = {"channels_first": first, "channels_last": to_channels_last_3d(copy.deepcopy(first))}
    with torch.no_grad():  # the same numbers up to float rounding
        gap = (models["channels_first"].eval()(x) - models["channels_last"].eval()(x)).abs().max().item()
    for model in models.values():
        model.train()
    times, median = alternate(train_steps(models, x, y), warmup, rounds, steps)
    return {"step_s": times, "median_step_s": median, "max_abs_logit_gap": gap,
            "last_over_first_time": median["channels_last"] / median["channels_first"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", nargs="+", default=["default", "random1", "random2"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=3, default=(16, 48, 48), metavar=("D", "H", "W"))
    add_round_arguments(parser, "steps per format")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bench_channels_last.json"))
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, *args.size, device=device)
    y = (torch.arange(args.batch) % 2).to(device)
    per_model = {name: measure(name, x, y, args.warmup, args.rounds, args.steps) for name in args.models}
    result = {
        "space": SPACE, "batch": args.batch, "input": list(args.size), **machine(device),
        "models": per_model,
        "last_over_first_time": {name: r["last_over_first_time"] for name, r in per_model.items()},
    }
    save(result, args.out, ("last_over_first_time", "load_average", "threads"))


if __name__ == "__main__":
    main()
