"""Checkpoint format: a Lightning checkpoint plus our metadata under the key ``"nni_covid3d"``.

The metadata (model name, exported architecture, class names, input channels, preprocessing settings,
and where the data came from) is stored as plain Python types, so a checkpoint is read with
``torch.load(weights_only=True)`` and ``evaluate``/``predict`` need no repeated flags.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from nni_covid3d.training.module import CHECKPOINT_KEY, CovidClassifier

__all__ = ["FORMAT_VERSION", "CheckpointError", "plain", "read_checkpoint", "load_classifier", "load_model"]

FORMAT_VERSION = 1
_MODEL_PREFIX = "_model."


class CheckpointError(ValueError):
    """A file that is not an nni-covid3d checkpoint, or a damaged one."""


def plain(value: Any) -> Any:
    """``value`` as JSON-compatible Python types (tuples become lists, paths strings)."""
    return json.loads(json.dumps(value, default=str))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict at ``path`` (``weights_only=True``), after checking it is one of ours."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types on foreign files (UnpicklingError, struct.error, ...)
        raise CheckpointError(f"{path} is not a checkpoint readable with torch.load(weights_only=True): {error}") from error
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{path} is not an nni-covid3d checkpoint (no {CHECKPOINT_KEY!r} metadata); "
            "use a .ckpt written by `nni-covid3d train` or `retrain`"
        )
    meta = checkpoint[CHECKPOINT_KEY]
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported nni-covid3d checkpoint format {version!r} (expected {FORMAT_VERSION})")
    return checkpoint


def _model_state(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    state = checkpoint["state_dict"]
    return {key[len(_MODEL_PREFIX):]: value for key, value in state.items() if key.startswith(_MODEL_PREFIX)}


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model (eval mode, CPU) and the checkpoint's metadata."""
    from nni_covid3d.models import get_model

    checkpoint = read_checkpoint(path)
    meta = checkpoint[CHECKPOINT_KEY]
    model = get_model(
        meta["model_name"], num_classes=meta["num_classes"], in_channels=meta["in_channels"], arch=meta["arch"]
    )
    try:
        model.load_state_dict(_model_state(checkpoint), strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit model {meta['model_name']!r}: {error}") from error
    return model.eval(), meta


def load_classifier(path: str | Path) -> CovidClassifier:
    """A :class:`CovidClassifier` holding the checkpoint's trained model and metadata (eval mode)."""
    model, meta = load_model(path)
    hparams = read_checkpoint(path).get("hyper_parameters", {})
    # The model is set afterwards: nni.trace would try to freeze a fixed CovidNet3D (a ModelSpace) argument.
    classifier = CovidClassifier(
        None,
        class_names=meta["class_names"],
        in_channels=meta["in_channels"],
        arch=meta["arch"],
        preprocessing=meta["preprocessing"],
        model_name=meta["model_name"],
        learning_rate=hparams.get("learning_rate", 1e-3),
        weight_decay=hparams.get("weight_decay", 5e-4),
        class_weights=hparams.get("class_weights"),
    )
    classifier.set_model(model)
    classifier.model_name = meta["model_name"]
    classifier.data_source = meta.get("data")
    return classifier.eval()
