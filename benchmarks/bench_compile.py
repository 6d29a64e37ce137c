"""Steady-state train steps of a CovidNet3D-S subnet, eager against ``torch.compile`` (inductor), side by side.

    python benchmarks/bench_compile.py --out benchmarks/bench_compile.json

The compact space's default subnet (``bench_channels_last.make_model``), batch 8, Adam; both models
start from the same weights. The compiled model's first step (the compilation) is timed on its own;
after warm-up steps, rounds alternate the two (so that a change of machine load hits both alike). The
figure per input is each one's median step time and their ratio (compiled / eager: below 1 is faster).
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from side_by_side import (  # beside this script
    SIZES, add_round_arguments, alternate, machine, make_model, save, train_steps,
)


def measure(size: tuple[int, int, int], batch: int, device: torch.device, warmup: int, rounds: int, steps: int) -> dict:
    torch.compiler.reset()  # each input compiles afresh (no recompilation limit carried over)
    torch.manual_seed(0)
    eager = make_model("default").to(device).train()
    models = {"eager": eager, "compiled": torch.compile(copy.deepcopy(eager))}
    x = torch.randn(batch, 1, *size, device=device)
    y = (torch.arange(batch) % 2).to(device)
    steps_of = train_steps(models, x, y)
    first_compiled_step_s = steps_of["compiled"](0)
    times, median = alternate(steps_of, warmup, rounds, steps)
    return {"step_s": times, "median_step_s": median, "first_compiled_step_s": first_compiled_step_s,
            "compiled_over_eager_time": median["compiled"] / median["eager"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--batch", type=int, default=8)
    add_round_arguments(parser, "steps per model")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bench_compile.json"))
    args = parser.parse_args()

    device = torch.device(args.device)
    per_size = {name: measure(SIZES[name], args.batch, device, args.warmup, args.rounds, args.steps)
                for name in args.sizes}
    result = {
        "batch": args.batch, "sizes": {name: list(SIZES[name]) for name in args.sizes}, **machine(device),
        "results": per_size,
        "compiled_over_eager_time": {name: r["compiled_over_eager_time"] for name, r in per_size.items()},
    }
    save(result, args.out, ("compiled_over_eager_time", "load_average", "threads"))


if __name__ == "__main__":
    main()
