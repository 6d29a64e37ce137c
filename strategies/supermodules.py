"""Single-path supernet modules for :class:`~nni_covid3d.strategies.GumbelDNAS`.

Each module replaces one NNI mutable (``LayerChoice``, ``InputChoice``, ``Repeat`` with a mutable
depth) and holds the architecture logits ``alpha`` of its label(s). Per step the search module draws,
for every label, ONE candidate with hard straight-through Gumbel-Softmax (:func:`hard_gumbel_draw`)
and hands the draws to the modules (:meth:`set_draws`). A module then runs only the drawn candidate
and multiplies its output by the straight-through weight ``hard - soft.detach() + soft`` at the
drawn index: the forward value is exactly 1, so the output is the subnet's, and the backward
carries ``d loss / d alpha`` through ``soft``. Modules sharing a label share one draw.

Compare ``nni.nas.oneshot.pytorch.supermodule.sampling`` (one path, no logits) and
``supermodule.differentiable`` (logits, but every path runs).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from nni.mutable import Categorical, CategoricalMultiple, Mutable, MutableExpression
from nni.nas.nn.pytorch import InputChoice, LayerChoice, MutableModule, Repeat
from nni.nas.oneshot.pytorch.base_lightning import BaseSuperNetModule

__all__ = [
    "Draw",
    "hard_gumbel_draw",
    "hard_gumbel_draws",
    "gumbel_max_indices",
    "GumbelSuperNetModule",
    "GumbelLayerChoice",
    "GumbelInputChoice",
    "GumbelRepeat",
    "reject_unsupported",
    "parameter_bytes",
    "keep_batchnorm_stats",
]

BYTES_PER_MB = 2**20


@dataclass
class Draw:
    """One label's sample for one step: the candidate index and its straight-through weight.

    ``weight`` is a 0-d tensor equal to 1 in the forward pass whose gradient flows into ``alpha``
    (``None`` when the sample is fixed and carries no gradient, e.g. argmax evaluation).
    """

    index: int
    weight: torch.Tensor | None = None


def hard_gumbel_draw(alpha: torch.Tensor, tau: float, generator: torch.Generator | None = None) -> Draw:
    """Draw one candidate from ``softmax(alpha)`` with hard straight-through Gumbel-Softmax.

    ``alpha``: [K] logits. The uniform noise is drawn on the CPU from ``generator`` (so that every
    DDP rank seeded alike draws the same path) and moved to ``alpha``'s device.
    """
    return hard_gumbel_draws({"": alpha}, tau, generator)[""]


def hard_gumbel_draws(
    alphas: Mapping[str, torch.Tensor], tau: float, generator: torch.Generator | None = None
) -> dict[str, Draw]:
    """:func:`hard_gumbel_draw` for every label at once: ``{label: [K_label] logits}`` -> ``{label: Draw}``.

    The noise is drawn label by label in the mapping's order (the same numbers as one call per label),
    but moved to the device in one copy and the indices read back in one transfer: on a GPU, one
    synchronisation per step instead of one per label.

    Under mixed precision (autocast) the logits, the noise and the softmax stay fp32: autocast is off
    here, so the draws and the straight-through weights are those of an fp32 run. The weight (exactly
    1 forward) scales a lower-precision activation without changing its dtype.
    """
    if not alphas:
        return {}
    labels = list(alphas)
    noise = _gumbel_noise(alphas, generator)
    first = alphas[labels[0]]
    noise_on_device = torch.cat(noise).to(first.device, torch.float32).split([n.numel() for n in noise])
    with torch.autocast(first.device.type, enabled=False):
        softs = [F.softmax((alphas[label].float() + g) / tau, dim=-1) for label, g in zip(labels, noise_on_device)]
    indices = torch.stack([torch.argmax(soft.detach()) for soft in softs]).tolist()
    draws = {}
    for label, soft, index in zip(labels, softs, indices):
        hard = torch.zeros_like(soft)
        hard[index] = 1.0
        straight_through = hard - soft.detach() + soft
        draws[label] = Draw(int(index), straight_through[index])
    return draws


def _gumbel_noise(alphas: Mapping[str, torch.Tensor], generator: torch.Generator | None) -> list[torch.Tensor]:
    """Standard Gumbel noise shaped like each logit vector, drawn on the CPU in the mapping's order."""
    noise = []
    for alpha in alphas.values():
        uniform = torch.rand(alpha.shape, generator=generator, dtype=torch.float32)
        noise.append(-torch.log(-torch.log(uniform.clamp_(1e-10, 1.0 - 1e-7))))
    return noise


def gumbel_max_indices(
    alphas: Mapping[str, torch.Tensor], tau: float, generator: torch.Generator | None = None
) -> dict[str, int]:
    """One index per label sampled from ``softmax(alpha / tau)`` (Gumbel-max), without gradient.

    ``{label: [K_label] logits}`` -> ``{label: index}``; one device-to-host transfer for all labels.
    """
    if not alphas:
        return {}
    noise = _gumbel_noise(alphas, generator)
    scores = torch.cat([alpha.detach().float() for alpha in alphas.values()]).cpu() / tau + torch.cat(noise)
    indices = torch.stack([torch.argmax(part) for part in scores.split([n.numel() for n in noise])]).tolist()
    return dict(zip(alphas, indices))


def parameter_bytes(module: nn.Module, exclude: set[int] | None = None) -> int:
    """Bytes of ``module``'s parameters (deduplicated), skipping parameters whose ``id`` is in ``exclude``."""
    exclude = exclude or set()
    seen: set[int] = set()
    total = 0
    for p in module.parameters():
        if id(p) in seen or id(p) in exclude:
            continue
        seen.add(id(p))
        total += p.numel() * p.element_size()
    return total


def count_flops(fn: Any, *args: Any, **kwargs: Any) -> float:
    """FLOPs of ``fn(*args, **kwargs)`` (``torch.utils.flop_counter``, 2 per multiply-add), no gradient."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn(*args, **kwargs)
    return float(counter.get_total_flops())


class _ScaleLowPrecision(torch.autograd.Function):
    """``x * weight`` for a bf16/fp16 ``x`` and an fp32 0-d ``weight``: the output keeps ``x``'s dtype, and
    ``d loss / d weight = sum(grad * x)`` is summed in fp32 (a low-precision sum over a whole activation
    would round the straight-through gradient of the logits to 2-3 significant digits)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return x * weight.to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        grad_x = grad * weight.to(grad.dtype) if ctx.needs_input_grad[0] else None
        grad_weight = (grad.float() * x.float()).sum().to(weight.dtype) if ctx.needs_input_grad[1] else None
        return grad_x, grad_weight


def _scale(output: Any, weight: torch.Tensor | None) -> Any:
    """Multiply every tensor in ``output`` (tensor / tuple / list / dict) by the 0-d ``weight``.

    Under mixed precision the activation keeps its dtype and the weight's gradient is summed in fp32.
    """
    if weight is None:
        return output
    if isinstance(output, torch.Tensor):
        if output.dtype != weight.dtype and output.is_floating_point():
            return _ScaleLowPrecision.apply(output, weight)
        return output * weight.to(output.dtype)
    if isinstance(output, (list, tuple)):
        return type(output)(_scale(o, weight) for o in output)
    if isinstance(output, dict):
        return {k: _scale(v, weight) for k, v in output.items()}
    return output


@contextlib.contextmanager
def keep_batchnorm_stats(module: nn.Module) -> Iterator[None]:
    """Undo running-statistics updates made inside the block (a recomputed forward must not count twice).

    Covers every normalisation layer that tracks running statistics (``track_running_stats``):
    batch norm of any dimension, synchronised or lazy, and instance norm when it tracks them.
    """
    saved = [(m, [b.clone() for b in m.buffers(recurse=False)]) for m in module.modules()
             if getattr(m, "track_running_stats", False)]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in saved:
                for buffer, value in zip(m.buffers(recurse=False), buffers):
                    buffer.copy_(value)


def _recompute_contexts(module: nn.Module) -> tuple[Any, Any]:
    return contextlib.nullcontext(), keep_batchnorm_stats(module)


def run_checkpointed(module: nn.Module, *args: torch.Tensor) -> Any:
    """``module(*args)`` keeping only its inputs for backward: the activations inside are recomputed
    during backward (less memory, one more forward). BatchNorm statistics are updated once."""
    from torch.utils.checkpoint import checkpoint

    return checkpoint(module, *args, use_reentrant=False, context_fn=partial(_recompute_contexts, module))


def _nested_supernet_params(module: nn.Module) -> set[int]:
    """``id``s of parameters that belong to Gumbel supernet modules nested strictly inside ``module``."""
    ids: set[int] = set()
    for sub in module.modules():
        if sub is not module and isinstance(sub, GumbelSuperNetModule):
            ids.update(id(p) for p in sub.parameters())
    return ids


class GumbelSuperNetModule(BaseSuperNetModule):
    """Interface shared by the Gumbel supernet modules (used by the search module)."""

    def label_alphas(self) -> dict[str, nn.Parameter]:
        """``{label: alpha}`` of the decisions this module takes part in."""
        raise NotImplementedError

    def label_values(self) -> dict[str, list[Any]]:
        """``{label: candidate values}`` in the order of ``alpha``."""
        raise NotImplementedError

    def set_draws(self, draws: dict[str, Draw]) -> None:
        """Fix the path for the next forward from per-label draws."""
        raise NotImplementedError

    def candidate_costs(self) -> dict[str, list[float]]:
        """``{label: [cost in MB of each value]}``: parameter bytes that choosing the value adds.

        Parameters of nested choices are excluded here; the nested modules count them themselves.
        """
        raise NotImplementedError

    def candidate_flops(self) -> dict[str, list[float]]:
        """``{label: [FLOPs per sample of each value]}``, from the input seen by the last forward
        with :attr:`capture_input` on (nested choices count at their current draw)."""
        raise NotImplementedError

    #: When true, forward keeps the first sample of its input for :meth:`candidate_flops`.
    capture_input: bool = False
    _captured: tuple | None = None

    def _capture(self, *args: Any, **kwargs: Any) -> None:
        if self.capture_input:
            first = lambda v: v[:1].detach() if isinstance(v, torch.Tensor) else (  # noqa: E731
                type(v)(first(x) for x in v) if isinstance(v, (list, tuple)) else v)
            self._captured = (first(args), {k: first(v) for k, v in kwargs.items()})

    def arch_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.label_alphas().values()

    def export(self, memo: dict[str, Any]) -> dict[str, Any]:
        """The argmax of the learned logits (never a sample)."""
        result = {}
        for label, alpha in self.label_alphas().items():
            if label not in memo:
                result[label] = self._value(label, int(torch.argmax(alpha.detach()).item()))
        return result

    def export_probs(self, memo: dict[str, Any]) -> dict[str, Any]:
        result = {}
        for label, alpha in self.label_alphas().items():
            if label not in memo:
                probs = F.softmax(alpha.detach().float(), dim=-1).cpu().tolist()
                # InputChoice values are one-index lists; key them by the index, as NNI's DARTS does.
                keys = [v[0] if isinstance(v, list) else v for v in self.label_values()[label]]
                result[label] = dict(zip(keys, probs))
        return result

    def resample(self, memo: dict[str, Any]) -> dict[str, Any]:
        """NNI's sampling API: take ``memo``'s value, else sample ``softmax(alpha)`` (no gradient)."""
        draws, new = {}, {}
        for label, alpha in self.label_alphas().items():
            values = self.label_values()[label]
            if label in memo:
                draws[label] = Draw(values.index(memo[label]))
            else:
                index = int(torch.multinomial(F.softmax(alpha.detach().float(), -1), 1).item())
                draws[label] = Draw(index)
                new[label] = values[index]
        self.set_draws(draws)
        return new

    def _value(self, label: str, index: int) -> Any:
        return self.label_values()[label][index]


class GumbelLayerChoice(LayerChoice, GumbelSuperNetModule):
    """``LayerChoice`` that runs only the drawn candidate, scaled by its straight-through weight.

    With ``checkpoint_candidates`` set, a drawn candidate with parameters runs under activation
    checkpointing while training (see :func:`run_checkpointed`).
    """

    checkpoint_candidates: bool = False

    def __init__(self, candidates: list[nn.Module] | dict[str, nn.Module], alpha: nn.Parameter, label: str):
        super().__init__(candidates, label=label)
        if len(alpha) != len(self.names):
            raise ValueError(f"alpha of {label!r} has {len(alpha)} entries for {len(self.names)} candidates")
        self._arch_alpha = alpha
        self._draw: Draw | None = None

    @classmethod
    def mutate(cls, module: nn.Module, name: str, memo: dict[str, Any], mutate_kwargs: dict[str, Any]):
        if isinstance(module, LayerChoice) and not isinstance(module, BaseSuperNetModule):
            return cls(module.candidates, memo[module.label], module.label)
        return None

    def label_alphas(self) -> dict[str, nn.Parameter]:
        return {self.label: self._arch_alpha}

    def label_values(self) -> dict[str, list[Any]]:
        return {self.label: list(self.names)}

    def set_draws(self, draws: dict[str, Draw]) -> None:
        self._draw = draws[self.label]

    def candidate_costs(self) -> dict[str, list[float]]:
        nested = _nested_supernet_params(self)
        return {self.label: [parameter_bytes(self[n], nested) / BYTES_PER_MB for n in self.names]}

    def candidate_flops(self) -> dict[str, list[float]]:
        if self._captured is None:
            raise RuntimeError(f"LayerChoice {self.label!r}: no input captured for FLOPs counting")
        args, kwargs = self._captured
        return {self.label: [count_flops(self[n], *args, **kwargs) for n in self.names]}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self._draw is None:
            raise RuntimeError(f"LayerChoice {self.label!r}: no path drawn before forward")
        self._capture(*args, **kwargs)
        candidate = self[self.names[self._draw.index]]
        if (self.checkpoint_candidates and self.training and torch.is_grad_enabled() and not kwargs
                and any(True for _ in candidate.parameters())):
            output = run_checkpointed(candidate, *args)
        else:
            output = candidate(*args, **kwargs)
        return _scale(output, self._draw.weight)


class GumbelInputChoice(InputChoice, GumbelSuperNetModule):
    """``InputChoice`` (one chosen input) that passes on only the drawn input, scaled."""

    def __init__(self, n_candidates: int, reduction: str, alpha: nn.Parameter, label: str):
        super().__init__(n_candidates, n_chosen=1, reduction=reduction, label=label)
        if len(alpha) != n_candidates:
            raise ValueError(f"alpha of {label!r} has {len(alpha)} entries for {n_candidates} candidates")
        self._arch_alpha = alpha
        self._draw: Draw | None = None

    @classmethod
    def mutate(cls, module: nn.Module, name: str, memo: dict[str, Any], mutate_kwargs: dict[str, Any]):
        if isinstance(module, InputChoice) and not isinstance(module, BaseSuperNetModule):
            if module.n_chosen != 1:
                raise TypeError(
                    f"GumbelDNAS draws one input per InputChoice, but `{name}` (label {module.label!r}) "
                    f"has n_chosen={module.n_chosen}"
                )
            return cls(module.n_candidates, module.reduction, memo[module.label], module.label)
        return None

    def label_alphas(self) -> dict[str, nn.Parameter]:
        return {self.label: self._arch_alpha}

    def label_values(self) -> dict[str, list[Any]]:
        # NNI's sample value of an InputChoice is the list of chosen indices.
        return {self.label: [[i] for i in range(self.n_candidates)]}

    def set_draws(self, draws: dict[str, Draw]) -> None:
        self._draw = draws[self.label]

    def candidate_costs(self) -> dict[str, list[float]]:
        return {self.label: [0.0] * self.n_candidates}

    def candidate_flops(self) -> dict[str, list[float]]:
        return {self.label: [0.0] * self.n_candidates}

    def forward(self, candidate_inputs: Sequence[Any]) -> Any:
        if self._draw is None:
            raise RuntimeError(f"InputChoice {self.label!r}: no input drawn before forward")
        if len(candidate_inputs) != self.n_candidates:
            raise ValueError(f"InputChoice {self.label!r}: expected {self.n_candidates} inputs, got {len(candidate_inputs)}")
        chosen = _scale(candidate_inputs[self._draw.index], self._draw.weight)
        # With one chosen input, sum / mean / concat all reduce to that input.
        return [chosen] if self.reduction == "none" else chosen


class GumbelRepeat(Repeat, GumbelSuperNetModule):
    """``Repeat`` with a mutable depth: runs the drawn number of blocks, output scaled.

    The depth may be any expression of categorical choices; its draw weight is the product of the
    straight-through weights of the labels it depends on.
    """

    def __init__(self, blocks: list[nn.Module], depth: MutableExpression[int], alphas: dict[str, nn.Parameter]):
        super().__init__(blocks, depth)
        self._arch_alpha = nn.ParameterDict(alphas)
        self._leaves: dict[str, Categorical] = {
            label: mutable for label, mutable in depth.simplify().items()  # type: ignore[misc]
        }
        self._depth: int | None = None
        self._weight: torch.Tensor | None = None

    @classmethod
    def mutate(cls, module: nn.Module, name: str, memo: dict[str, Any], mutate_kwargs: dict[str, Any]):
        if isinstance(module, Repeat) and not isinstance(module, BaseSuperNetModule) \
                and isinstance(module.depth_choice, Mutable):
            alphas = {label: memo[label] for label in module.depth_choice.simplify()}
            return cls(list(module.blocks), module.depth_choice, alphas)  # type: ignore[arg-type]
        return None

    def label_alphas(self) -> dict[str, nn.Parameter]:
        return {label: self._arch_alpha[label] for label in self._leaves}

    def label_values(self) -> dict[str, list[Any]]:
        return {label: list(mutable.values) for label, mutable in self._leaves.items()}

    def set_draws(self, draws: dict[str, Draw]) -> None:
        sample = {label: self._value(label, draws[label].index) for label in self._leaves}
        self._depth = int(self.depth_choice.freeze(sample))  # type: ignore[union-attr]
        weights = [draws[label].weight for label in self._leaves if draws[label].weight is not None]
        self._weight = math.prod(weights[1:], start=weights[0]) if weights else None

    def candidate_costs(self) -> dict[str, list[float]]:
        """Cost per depth value: bytes of the first ``depth`` blocks (single-label depths only)."""
        nested = _nested_supernet_params(self)
        block_mb = [parameter_bytes(block, nested) / BYTES_PER_MB for block in self.blocks]
        costs = {}
        for label, mutable in self._leaves.items():
            if len(self._leaves) == 1 and isinstance(self.depth_choice, Categorical):
                costs[label] = [sum(block_mb[: int(v)]) for v in mutable.values]
            else:
                # A composed depth expression: charge the full stack to every value (no gradient signal).
                costs[label] = [sum(block_mb)] * len(mutable.values)
        return costs

    def candidate_flops(self) -> dict[str, list[float]]:
        """FLOPs per depth value: the first ``depth`` blocks run on the captured input."""
        if self._captured is None:
            raise RuntimeError(f"Repeat {self.label!r}: no input captured for FLOPs counting")
        x = self._captured[0][0]
        cumulative, total = [0.0], 0.0
        for block in self.blocks:
            total += count_flops(block, x)
            with torch.no_grad():
                x = block(x)
            cumulative.append(total)
        flops = {}
        for label, mutable in self._leaves.items():
            if len(self._leaves) == 1 and isinstance(self.depth_choice, Categorical):
                flops[label] = [cumulative[int(v)] for v in mutable.values]
            else:
                flops[label] = [cumulative[-1]] * len(mutable.values)
        return flops

    def forward(self, x: Any) -> Any:
        if self._depth is None:
            raise RuntimeError(f"Repeat {self.label!r}: no depth drawn before forward")
        self._capture(x)
        for block in self.blocks[: self._depth]:
            x = block(x)
        return _scale(x, self._weight)


def reject_unsupported(module: nn.Module, name: str, memo: dict[str, Any], mutate_kwargs: dict[str, Any]) -> bool:
    """Last mutation hook: fail on any mutable that no Gumbel supernet module took over."""
    if isinstance(module, MutableModule) and not isinstance(module, BaseSuperNetModule) and module.mutables:
        labels = sorted(str(getattr(mutable, "label", mutable)) for mutable in module.mutables)
        raise TypeError(
            f"GumbelDNAS supports only LayerChoice, InputChoice and Repeat (mutable depth); "
            f"module `{name}` of type {type(module).__name__} holds mutables {labels}"
        )
    return False


def check_categorical(label: str, mutable: Mutable) -> int:
    """Number of candidates of a top-level mutable, or a clear error if it cannot be searched."""
    if isinstance(mutable, Categorical):
        return len(mutable.values)
    if isinstance(mutable, CategoricalMultiple) and mutable.n_chosen == 1:
        return len(mutable.values)
    raise TypeError(
        f"GumbelDNAS searches categorical choices (LayerChoice, InputChoice with n_chosen=1, Repeat depth); "
        f"mutable {label!r} is a {type(mutable).__name__}: {mutable!r}"
    )
