"""Models by name: the searched ``covidnet3d`` and the baselines ``resnet3d101``, ``densenet3d121``, ``mc3_18``.

>>> model = get_model("mc3_18", num_classes=3, in_channels=1)
>>> model = get_model("covidnet3d", arch="best_arch.json")   # an exported architecture (file or dict)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

from torch import nn

from nni_covid3d.models.baselines import densenet3d121, mc3_18, resnet3d101

__all__ = [
    "MODEL_NAMES",
    "BASELINES",
    "MIN_DEPTH",
    "get_model",
    "resolve_architecture",
    "count_parameters",
    "model_size_mb",
    "resnet3d101",
    "densenet3d121",
    "mc3_18",
]

BASELINES: dict[str, Callable[..., nn.Module]] = {
    "resnet3d101": resnet3d101,
    "densenet3d121": densenet3d121,
    "mc3_18": mc3_18,
}
MODEL_NAMES: tuple[str, ...] = ("covidnet3d", *BASELINES)

# Smallest number of slices each model accepts (DenseNet's pooling runs out of depth below 32).
MIN_DEPTH: dict[str, int] = {"densenet3d121": 32}

# Names used in the papers' tables.
DISPLAY_NAMES: dict[str, str] = {
    "covidnet3d": "CovidNet3D (searched)",
    "resnet3d101": "ResNet3D101",
    "densenet3d121": "DenseNet3D121",
    "mc3_18": "MC3_18",
}


def resolve_architecture(
    arch: Mapping[str, Any] | str | Path, num_classes: int | None = None, in_channels: int | None = None
) -> dict[str, Any]:
    """An exported architecture (dict or JSON file) with its head and stem set to ``num_classes`` /
    ``in_channels`` (the searched choices do not depend on them, so an architecture searched on one
    dataset can be retrained on another)."""
    if isinstance(arch, Mapping):
        resolved = json.loads(json.dumps(arch))  # deep copy, plain types
    else:
        path = Path(arch)
        if not path.is_file():
            raise FileNotFoundError(f"architecture file {path} does not exist")
        from nni_covid3d.search_spaces import load_architecture

        resolved = load_architecture(path)
    space = resolved.setdefault("space", {})
    if not isinstance(space, dict):
        raise ValueError(f"architecture 'space' must be a dict, got {type(space).__name__}")
    if num_classes is not None:
        space["num_classes"] = int(num_classes)
    if in_channels is not None:
        space["in_channels"] = int(in_channels)
    return resolved


def get_model(
    name: str,
    num_classes: int = 3,
    in_channels: int = 1,
    arch: Mapping[str, Any] | str | Path | None = None,
) -> nn.Module:
    """Build the model called ``name`` (one of :data:`MODEL_NAMES`), freshly initialised.

    ``covidnet3d`` needs ``arch``: an exported architecture dict or the path of its JSON file
    (``nni_covid3d.search_spaces.save_architecture``); its head/stem follow ``num_classes``/``in_channels``.
    The model maps ``FloatTensor[B, in_channels, D, H, W]`` to logits ``FloatTensor[B, num_classes]``.
    """
    key = name.lower()
    if key == "covidnet3d":
        if arch is None:
            raise ValueError("model 'covidnet3d' needs an architecture (arch=dict or path to an exported JSON file)")
        from nni_covid3d.search_spaces import build_model

        return build_model(resolve_architecture(arch, num_classes, in_channels))
    if key not in BASELINES:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(('covidnet3d', *BASELINES))}")
    if arch is not None:
        raise ValueError(f"model {name!r} is a fixed baseline and takes no architecture")
    return BASELINES[key](num_classes=num_classes, in_channels=in_channels)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def model_size_mb(model: nn.Module) -> float:
    """Size of the float32 parameters in MB (``params * 4 / 2**20``), the papers' convention."""
    return count_parameters(model) * 4 / 2**20
