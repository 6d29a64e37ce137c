"""Expected cost of a Gumbel supernet under ``softmax(alpha)``: parameter size and FLOPs, for budget penalties.

Both are differentiable in the logits (the penalty's gradient is exact) and also give the cost of the
argmax subnet, which the search logs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..supermodules import BYTES_PER_MB, Draw, GumbelSuperNetModule, count_flops, parameter_bytes

__all__ = ["FlopsTable", "expected_size_mb"]


def _expectation(alphas: Mapping[str, torch.Tensor], costs: Sequence[dict[str, list[float]]],
                 base: float) -> tuple[torch.Tensor, float]:
    expected = torch.zeros((), device=next(iter(alphas.values())).device)
    argmax_cost = base
    for module_costs in costs:
        for label, values in module_costs.items():
            expected = expected + (F.softmax(alphas[label], -1) * torch.tensor(values, device=expected.device)).sum()
            argmax_cost += values[int(torch.argmax(alphas[label].detach()).item())]
    return expected + base, argmax_cost


def expected_size_mb(model: nn.Module, modules: Sequence[GumbelSuperNetModule],
                     alphas: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
    """(expected parameter MB of ``model`` under ``softmax(alpha)``, MB of the argmax subnet)."""
    exclude = {id(p) for module in modules for p in module.parameters()}
    base = parameter_bytes(model, exclude) / BYTES_PER_MB
    return _expectation(alphas, [module.candidate_costs() for module in modules], base)


@dataclass
class FlopsTable:
    """Per-candidate FLOPs per sample, measured once; ``base`` is everything outside the choices."""

    base: float
    costs: list[dict[str, list[float]]]

    @classmethod
    def measure(cls, model: nn.Module, modules: Sequence[GumbelSuperNetModule], run_forward: Callable[[], Any],
                draws: Mapping[str, Draw]) -> tuple["FlopsTable", Any]:
        """Run ``run_forward`` (one forward of ``model`` on the current ``draws``) capturing every choice's
        input, then count each candidate on the first sample of it. Returns (table, forward's output)."""
        captured: list[tuple] = []
        hook = model.register_forward_pre_hook(lambda m, args: captured.append(args) if not captured else None)
        for module in modules:
            module.capture_input = True
        try:
            output = run_forward()
        finally:
            hook.remove()
            for module in modules:
                module.capture_input = False
        was_training = model.training
        model.eval()  # batch-1 counting: no BatchNorm statistics updates
        try:
            costs = [module.candidate_flops() for module in modules]
            first = tuple(a[:1] if isinstance(a, torch.Tensor) else a for a in captured[0])
            total = count_flops(model, *first)
        finally:
            model.train(was_training)
        drawn = sum(values[draws[label].index] for module_costs in costs for label, values in module_costs.items())
        return cls(total - drawn, costs), output

    def expected(self, alphas: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
        """(expected FLOPs per sample under ``softmax(alpha)``, FLOPs of the argmax subnet)."""
        return _expectation(alphas, self.costs, self.base)
