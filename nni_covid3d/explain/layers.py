"""Target-layer selection for class activation maps on 3D classifiers.

A CAM is only as fine as the feature map it is read from. The baselines have well-known defaults
(their ``cam_layer`` in ``nni_covid3d.models.MODELS``); for searched models, whose
module names depend on the sampled architecture, the default is found by a forward pass: the
deepest module whose output still keeps ``min_depth`` slices, so the map can tell slices apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

__all__ = [
    "LayerInfo",
    "probe_layers",
    "deepest_layer_with_depth",
    "default_target_layer",
    "default_fc_layer",
    "feature_shape",
]


@dataclass(frozen=True)
class LayerInfo:
    """One module's output as seen in a forward pass.

    ``order`` is the position at which the module's forward *finished* (post-order), so a block that
    wraps several layers comes after all of them and a residual block's output includes its skip.
    """

    name: str
    shape: tuple[int, ...]
    order: int


@torch.no_grad()
def probe_layers(model: nn.Module, input_shape: Sequence[int]) -> list[LayerInfo]:
    """Run ``model`` once on zeros of ``input_shape`` (N, C, D, H, W) and record every named
    submodule's output shape (the last call's, for a module that runs several times)."""
    seen: dict[str, LayerInfo] = {}
    counter = [0]
    handles = []

    def hook(name: str):
        def _record(_module, _inputs, output):
            if isinstance(output, torch.Tensor):
                seen[name] = LayerInfo(name, tuple(output.shape), counter[0])
            counter[0] += 1

        return _record

    for name, module in model.named_modules():
        if name:  # skip the root: its output is the logits
            handles.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        model(torch.zeros(*input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return sorted(seen.values(), key=lambda info: info.order)


def deepest_layer_with_depth(model: nn.Module, input_shape: Sequence[int], min_depth: int = 4) -> str:
    """Name of the last-finishing module whose output is a 5D feature map with depth >= ``min_depth``.

    Raises ``ValueError`` when no module keeps that depth (e.g. an input with fewer slices).
    """
    candidates = [
        info for info in probe_layers(model, input_shape) if len(info.shape) == 5 and info.shape[2] >= min_depth
    ]
    if not candidates:
        raise ValueError(
            f"no layer of {type(model).__name__} keeps depth >= {min_depth} for input {tuple(input_shape)}"
        )
    return candidates[-1].name


def default_target_layer(model: nn.Module, input_shape: Sequence[int], min_depth: int = 4) -> str:
    """The default Grad-CAM layer: a baseline's customary layer (``nni_covid3d.models.MODELS``), else
    the deepest layer keeping depth >= ``min_depth`` (found with :func:`deepest_layer_with_depth`)."""
    from nni_covid3d.models import spec_of

    spec = spec_of(model)
    if spec is not None and spec.cam_layer is not None:
        return spec.cam_layer
    return deepest_layer_with_depth(model, input_shape, min_depth)


def default_fc_layer(model: nn.Module, input_shape: Sequence[int]) -> tuple[str, str]:
    """(feature layer, fully-connected layer) for plain CAM.

    Plain CAM applies the classifier's linear layer at every position of the feature map, which is
    only exact when nothing but global pooling (and flatten / dropout) lies between the two. For the
    baselines these are their known layers; otherwise the last 5D output before the last ``nn.Linear``.
    """
    from nni_covid3d.models import spec_of

    spec = spec_of(model)
    if spec is not None and spec.cam_layer is not None and spec.fc_layer is not None:
        return spec.cam_layer, spec.fc_layer
    infos = probe_layers(model, input_shape)
    modules = dict(model.named_modules())
    linears = [info for info in infos if isinstance(modules[info.name], nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier: plain CAM needs one; use Grad-CAM")
    fc = linears[-1]
    # the feature map itself, not the global pooling's (N, C, 1, 1, 1) output
    features = [info for info in infos if len(info.shape) == 5 and info.order < fc.order and max(info.shape[2:]) > 1]
    if not features:
        raise ValueError(f"{type(model).__name__} has no 5D feature map before {fc.name!r}")
    return features[-1].name, fc.name


def feature_shape(model: nn.Module, layer: str, input_shape: Sequence[int]) -> tuple[int, ...]:
    """Output shape of ``layer`` for an input of ``input_shape``; ``KeyError`` naming the known layers."""
    infos = {info.name: info for info in probe_layers(model, input_shape)}
    if layer not in infos:
        names = [name for name, _ in model.named_modules() if name]
        raise KeyError(f"layer {layer!r} not found in {type(model).__name__} (has e.g. {names[-8:]})")
    return infos[layer].shape
