"""Size and compute cost of a fixed model, without training.

- ``params``: number of parameters (BatchNorm affine included, running statistics excluded);
- ``size_mb``: ``params * 4 / 2**20``, the convention of the CovidNet3D / EMARS papers (float32);
- ``flops``: floating-point operations of one forward pass at batch 1, counted by PyTorch's own
  ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and linear layers, 2 per multiply-add;
  BatchNorm, activations, pooling and additions are not counted);
- ``macs``: ``flops / 2`` (multiply-adds, what many NAS papers call "FLOPs");
- ``latency_ms``: median CPU time of one forward pass on one volume (:func:`measure_latency`).

The one cost module of the project: every table (``arch show``, ``compare``, ``benchmark``, NNI
trials) counts models here.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["ModelCost", "count_parameters", "measure_cost", "measure_latency", "model_cost", "size_mb"]


@dataclass(frozen=True)
class ModelCost:
    params: int
    size_mb: float
    flops: int
    macs: int
    input_size: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["input_size"] = list(self.input_size)
        return result

    def __str__(self) -> str:
        size = "x".join(str(n) for n in self.input_size)
        return (
            f"{self.params:,} parameters ({self.size_mb:.2f} MB), "
            f"{self.flops / 1e9:.3f} GFLOPs ({self.macs / 1e9:.3f} GMACs) at {size}"
        )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def size_mb(params: int) -> float:
    """Parameters to MB as the papers count them (float32, 2^20 bytes)."""
    return params * 4 / 2**20


def model_cost(model: nn.Module | Mapping[str, Any], input_size: Sequence[int] = (1, 16, 64, 64)) -> ModelCost:
    """Parameters, MB and FLOPs of a fixed model (or an architecture dict) for one input ``(C, D, H, W)``.

    A 5-tuple ``(N, C, D, H, W)`` is accepted too; FLOPs are always reported per sample (batch 1).
    """
    if isinstance(model, Mapping):
        from .architecture import build_model

        model = build_model(model)
    from nni.nas.nn.pytorch import ModelSpace

    if isinstance(model, ModelSpace) and model.simplify():
        raise ValueError("model_cost needs a fixed model; build one with build_model(arch) or space.freeze(sample)")
    size = tuple(int(n) for n in input_size)
    if len(size) == 5:
        size = size[1:]
    if len(size) != 4 or min(size) < 1:
        raise ValueError(f"input_size must be (C, D, H, W) with positive sizes, got {tuple(input_size)}")
    params = count_parameters(model)
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            model(torch.zeros((1, *size), device=device))
    finally:
        model.train(was_training)
    flops = int(counter.get_total_flops())
    return ModelCost(params=params, size_mb=size_mb(params), flops=flops, macs=flops // 2, input_size=size)


def measure_latency(model: nn.Module, input_size: Sequence[int], *, repeats: int = 5, threads: int | None = 1) -> float:
    """Median CPU wall time (ms) of one forward pass on one volume ``[1, *input_size]`` (after one warm-up)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        model = model.cpu().eval()
        x = torch.zeros(1, *input_size)
        times = []
        with torch.inference_mode():
            model(x)
            for _ in range(repeats):
                start = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - start) * 1000)
        return float(statistics.median(times))
    finally:
        torch.set_num_threads(previous)


def measure_cost(model: nn.Module, input_size: Sequence[int], *, latency_repeats: int = 5, threads: int | None = 1) -> dict[str, Any]:
    """``{"params", "size_mb", "gflops", "latency_ms"}`` of ``model`` for one input ``(C, D, H, W)``.

    FLOPs come from :func:`model_cost` (PyTorch's FlopCounterMode, 2 per multiply-add), the same
    counter for every model.
    """
    cost = model_cost(model, tuple(input_size))
    return {
        "params": cost.params,
        "size_mb": cost.size_mb,
        "gflops": cost.flops / 1e9,
        "latency_ms": measure_latency(model, input_size, repeats=latency_repeats, threads=threads),
    }
