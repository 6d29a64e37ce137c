"""Models by name: the searched ``covidnet3d`` and the baselines ``resnet3d101``, ``densenet3d121``, ``mc3_18``.

>>> model = get_model("mc3_18", num_classes=3, in_channels=1)
>>> model = get_model("covidnet3d", arch="best_arch.json")   # an exported architecture (file or dict)
"""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from torch import nn

from nni_covid3d.models.baselines import densenet3d121, mc3_18, resnet3d101

__all__ = [
    "ModelSpec",
    "MODELS",
    "MODEL_NAMES",
    "BASELINES",
    "MIN_DEPTH",
    "DISPLAY_NAMES",
    "spec_of",
    "get_model",
    "resolve_architecture",
    "count_parameters",
    "model_size_mb",
    "resnet3d101",
    "densenet3d121",
    "mc3_18",
]


@dataclass(frozen=True)
class ModelSpec:
    """Everything the project knows about one model, in one place.

    Args:
        name: the registry key (``--model``).
        display_name: the model's name in the papers' tables.
        builder: ``builder(num_classes=, in_channels=) -> nn.Module``; ``None`` for ``covidnet3d``,
            which is built from an exported architecture.
        min_depth: the fewest slices the model accepts.
        cam_layer: the customary Grad-CAM layer; ``None``: the deepest layer that keeps depth,
            found by a forward probe (``nni_covid3d.explain.layers``).
        fc_layer: the linear classifier plain CAM applies at every position; ``None``: the last ``nn.Linear``.
        model_class: import path of the built model's class, which identifies a loaded model.
    """

    name: str
    display_name: str
    builder: Callable[..., nn.Module] | None
    min_depth: int = 1
    cam_layer: str | None = None
    fc_layer: str | None = None
    model_class: str | None = None

    def is_instance(self, model: nn.Module) -> bool:
        """Whether ``model`` was built by this entry (by its class)."""
        if self.model_class is None:
            return False
        module_name, _, class_name = self.model_class.rpartition(".")
        return isinstance(model, getattr(importlib.import_module(module_name), class_name))


MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("covidnet3d", "CovidNet3D (searched)", None),
    ModelSpec("resnet3d101", "ResNet3D101", resnet3d101, cam_layer="layer4", fc_layer="fc",
              model_class="monai.networks.nets.ResNet"),
    # Its four stride-2 stages and the final pooling leave no depth below 32 slices.
    ModelSpec("densenet3d121", "DenseNet3D121", densenet3d121, min_depth=32, cam_layer="class_layers.relu",
              fc_layer="class_layers.out", model_class="monai.networks.nets.DenseNet"),
    ModelSpec("mc3_18", "MC3_18", mc3_18, cam_layer="layer4", fc_layer="fc",
              model_class="torchvision.models.video.resnet.VideoResNet"),
)}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)
BASELINES: dict[str, Callable[..., nn.Module]] = {name: spec.builder for name, spec in MODELS.items() if spec.builder}
#: Smallest number of slices of the models that need more than one.
MIN_DEPTH: dict[str, int] = {name: spec.min_depth for name, spec in MODELS.items() if spec.min_depth > 1}
#: Names used in the papers' tables.
DISPLAY_NAMES: dict[str, str] = {name: spec.display_name for name, spec in MODELS.items()}


def spec_of(model: nn.Module) -> ModelSpec | None:
    """The registry entry of a built baseline, ``None`` for anything else (e.g. a searched model)."""
    return next((spec for spec in MODELS.values() if spec.is_instance(model)), None)


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
    from nni_covid3d.search_spaces.cost import count_parameters as count

    return count(model)


def model_size_mb(model: nn.Module) -> float:
    """Size of the float32 parameters in MB (``params * 4 / 2**20``), the papers' convention."""
    from nni_covid3d.search_spaces.cost import size_mb

    return size_mb(count_parameters(model))
