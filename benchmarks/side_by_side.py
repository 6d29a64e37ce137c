"""What the side-by-side step benchmarks share (``bench_precision``, ``bench_channels_last``,
``bench_compile``, ``bench_augment``): the compact space's subnets, a timed train step (one Adam per
model), rounds that alternate the compared ways (so that a change of machine load hits all alike), the
machine's description."""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from nni_covid3d.models import get_model
from nni_covid3d.search_spaces import CovidNet3DSpace, build_model, export_architecture, random_architecture

#: Inputs ``(D, H, W)`` of the paper's search and retraining stages.
SIZES = {"search": (16, 64, 64), "retrain": (32, 128, 128)}
#: The compact CovidNet3D-S space the step benchmarks use.
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


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               autocast_dtype: torch.dtype | None = None) -> float:
    """One forward/backward/Adam step (under autocast to ``autocast_dtype`` when given); seconds, the
    device synchronised."""
    synchronize(x.device)
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        loss = F.cross_entropy(model(x).float(), y)
    loss.backward()
    optimizer.step()
    synchronize(x.device)
    return time.perf_counter() - start


def train_steps(models: Mapping[str, torch.nn.Module], x: torch.Tensor, y: torch.Tensor,
                autocast_dtypes: Mapping[str, torch.dtype | None] | None = None) -> dict[str, Callable[[int], float]]:
    """Each model's timed :func:`train_step` with its own Adam (under ``autocast_dtypes[name]`` when
    given), as :func:`alternate` takes them."""
    dtypes = autocast_dtypes or {}

    def way(model: torch.nn.Module, dtype: torch.dtype | None) -> Callable[[int], float]:
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)
        return lambda step: train_step(model, optimizer, x, y, dtype)

    return {name: way(model, dtypes.get(name)) for name, model in models.items()}


def add_round_arguments(parser: argparse.ArgumentParser, unit: str, *, rounds: int = 4, steps: int = 2) -> None:
    """``--warmup``, ``--rounds`` and ``--steps`` of :func:`alternate`; ``unit`` names what is timed
    (e.g. "steps per format")."""
    parser.add_argument("--warmup", type=int, default=2, help=f"untimed {unit}")
    parser.add_argument("--rounds", type=int, default=rounds, help="alternating rounds")
    parser.add_argument("--steps", type=int, default=steps, help=f"timed {unit} per round")


def alternate(ways: Mapping[str, Callable[[int], float]], warmup: int, rounds: int,
              steps: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Time each way (``way(step) -> seconds``): ``warmup`` untimed calls each, then ``rounds`` rounds of
    ``steps`` calls per way in turn. Returns every time and each way's median."""
    for way in ways.values():
        for step in range(warmup):
            way(step)
    times: dict[str, list[float]] = {name: [] for name in ways}
    for round_ in range(rounds):
        for name, way in ways.items():
            times[name] += [way(warmup + round_ * steps + s) for s in range(steps)]
    return times, {name: statistics.median(values) for name, values in times.items()}


def machine(device: torch.device) -> dict[str, Any]:
    """The device, its name, torch's threads, the load average and torch's version."""
    return {"device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
            else (platform.processor() or platform.machine()),
            "threads": torch.get_num_threads(), "load_average": os.getloadavg(), "torch": torch.__version__}


def save(result: Mapping[str, Any], out: Path, summary: Sequence[str]) -> None:
    """Write ``result`` as JSON to ``out`` and print its ``summary`` keys."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: result[key] for key in summary}))
