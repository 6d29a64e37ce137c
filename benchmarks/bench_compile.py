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
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_channels_last import make_model  # beside this script

SIZES = {"search": (16, 64, 64), "retrain": (32, 128, 128)}


def step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> float:
    """One forward/backward/step; seconds (the device synchronised)."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    sync()
    return time.perf_counter() - start


def measure(size: tuple[int, int, int], batch: int, device: torch.device, warmup: int, rounds: int, steps: int) -> dict:
    torch.compiler.reset()  # each input compiles afresh (no recompilation limit carried over)
    torch.manual_seed(0)
    eager = make_model("default").to(device).train()
    models = {"eager": eager, "compiled": torch.compile(copy.deepcopy(eager))}
    optimizers = {name: torch.optim.Adam(m.parameters(), 1e-3) for name, m in models.items()}
    x = torch.randn(batch, 1, *size, device=device)
    y = (torch.arange(batch) % 2).to(device)
    first_compiled_step_s = step(models["compiled"], optimizers["compiled"], x, y)
    for name in models:
        for _ in range(warmup):
            step(models[name], optimizers[name], x, y)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name in models:
            times[name] += [step(models[name], optimizers[name], x, y) for _ in range(steps)]
    median = {name: statistics.median(values) for name, values in times.items()}
    return {"step_s": times, "median_step_s": median, "first_compiled_step_s": first_compiled_step_s,
            "compiled_over_eager_time": median["compiled"] / median["eager"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per model per round")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bench_compile.json"))
    args = parser.parse_args()

    device = torch.device(args.device)
    per_size = {name: measure(SIZES[name], args.batch, device, args.warmup, args.rounds, args.steps)
                for name in args.sizes}
    result = {
        "batch": args.batch, "sizes": {name: list(SIZES[name]) for name in args.sizes}, "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "threads": torch.get_num_threads(), "load_average": os.getloadavg(), "torch": torch.__version__,
        "results": per_size,
        "compiled_over_eager_time": {name: r["compiled_over_eager_time"] for name, r in per_size.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("compiled_over_eager_time", "load_average", "threads")}))


if __name__ == "__main__":
    main()
