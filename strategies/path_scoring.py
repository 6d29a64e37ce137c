"""Score fixed paths of a trained single-path supernet with its shared weights.

What a weight-sharing search "thinks" of an architecture: the supernet's validation accuracy on that
path. BatchNorm statistics accumulated over the search's mix of paths fit no single path, so each
path's statistics are recomputed on training batches before it is scored, as Once-for-All does
(mit-han-lab/once-for-all, ``set_running_statistics``); the supernet's own statistics are restored
afterwards. Works for any one-shot module whose supernet modules take a path through NNI's sampling
API (``resample(memo)``): GumbelDNAS and NNI's RandomOneShot (ENAS/SPOS-style). DARTS-style supernets
run every candidate at once and have no single path to score.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from .supermodules import keep_batchnorm_stats

__all__ = ["fix_path", "recalibrate_batchnorm", "score_paths"]

def fix_path(oneshot_module: Any, sample: Mapping[str, Any]) -> None:
    """Make every supernet module of ``oneshot_module`` run the candidates of ``sample`` (NNI sample values).

    Raises:
        ValueError: the supernet does not take single paths (e.g. DARTS), or ``sample`` misses a label.
    """
    from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedInput, DifferentiableMixedLayer

    modules = list(oneshot_module.supernet_modules())
    if any(isinstance(m, (DifferentiableMixedLayer, DifferentiableMixedInput)) for m in modules):
        raise ValueError("a DARTS-style supernet runs every candidate at once: only single-path supernets "
                         "(GumbelDNAS, RandomOneShot) can score a path")
    missing = sorted({label for module in modules for label in _labels(module)} - set(sample))
    if missing:
        raise ValueError(f"the sample misses the supernet's labels {missing}")
    memo = dict(sample)
    for module in modules:
        module.resample(memo)


def _labels(module: Any) -> Iterable[str]:
    label_alphas = getattr(module, "label_alphas", None)
    if callable(label_alphas):
        return label_alphas().keys()
    label = getattr(module, "label", None)
    return [label] if label is not None else []


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: Sequence[torch.Tensor]) -> None:
    """Recompute every BatchNorm's running mean and variance as the plain average over ``images``
    (batches ``[B, C, D, H, W]``), in training mode; the model is left in evaluation mode."""
    # Every normalisation layer that tracks running statistics (batch norm of any kind, tracked instance norm).
    norms = [m for m in model.modules() if getattr(m, "track_running_stats", False) and hasattr(m, "reset_running_stats")]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches
    model.train()
    try:
        for batch in images:
            model(batch)
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.eval()


@torch.no_grad()
def score_paths(oneshot_module: Any, samples: Sequence[Mapping[str, Any]], recalibration: Sequence[torch.Tensor],
                validation: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> list[float]:
    """Validation accuracy of each path in ``samples`` under the supernet's shared weights.

    Args:
        oneshot_module: a trained single-path one-shot Lightning module (``supernet_modules()``, ``model``).
        samples: NNI samples (``{label: value}``), one per path.
        recalibration: training image batches ``[B, 1, D, H, W]`` that recompute BatchNorm per path.
        validation: ``(images [B, 1, D, H, W], labels [B])`` batches that score each path.

    Returns:
        the accuracy of each path, in ``samples``' order. The supernet's weights and BatchNorm
        statistics are as before the call.
    """
    model = oneshot_module.model
    was_training = model.training
    scores = []
    with keep_batchnorm_stats(model):
        for sample in samples:
            fix_path(oneshot_module, sample)
            recalibrate_batchnorm(model, recalibration)
            correct = total = 0
            for images, labels in validation:
                correct += int((model(images).argmax(1) == labels).sum())
                total += len(labels)
            scores.append(correct / total)
    model.train(was_training)
    return scores
