"""Checkpoint format: a Lightning checkpoint plus our metadata under the key ``"nni_covid3d"``.

The metadata (model name, exported architecture, class names, input channels, preprocessing settings,
and where the data came from) is stored as plain Python types, so a checkpoint is read with
``torch.load(weights_only=True)`` and ``evaluate``/``predict`` need no repeated flags.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from nni_covid3d.data.io import describe_error, require_regular_file
from nni_covid3d.data.records import DataError

__all__ = ["CHECKPOINT_KEY", "FORMAT_VERSION", "CheckpointError", "load_checked", "plain", "read_checkpoint", "load_model"]

#: Key of our metadata inside a Lightning checkpoint.
CHECKPOINT_KEY = "nni_covid3d"
FORMAT_VERSION = 1
_MODEL_PREFIX = "_model."
#: Metadata every checkpoint carries, with its type.
_META_TYPES = {"model_name": str, "num_classes": int, "in_channels": int, "class_names": list}


class CheckpointError(ValueError):
    """A file that is not an nni-covid3d checkpoint, or a damaged one."""


def plain(value: Any) -> Any:
    """``value`` as JSON-compatible Python types (tuples become lists, paths strings)."""
    return json.loads(json.dumps(value, default=str))


def _check_archive(path: Path) -> None:
    """Verify the CRC of every member of a zip-format checkpoint: ``torch.load`` does not, so a damaged
    weight record would otherwise load as wrong weights."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return  # the legacy format, or not a checkpoint at all: torch.load decides
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if all(m.CRC == 0 for m in members if m.file_size):
                return  # written with torch's CRC computation switched off: nothing to verify
            bad = archive.testzip()
    except Exception as error:  # BadZipFile, EOFError, OSError, zlib errors ...
        raise CheckpointError(f"{path}: damaged checkpoint archive ({describe_error(error)})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: damaged checkpoint: its record {bad} fails the archive's CRC check")


def _check_metadata(path: Path, meta: Mapping[str, Any]) -> None:
    """The metadata a model is rebuilt from: present and of the right types."""
    for key, kind in _META_TYPES.items():
        if not isinstance(meta.get(key), kind):
            raise CheckpointError(f"{path}: damaged checkpoint metadata: {key!r} is missing or not of type {kind.__name__}")
    if len(meta["class_names"]) != meta["num_classes"]:
        raise CheckpointError(
            f"{path}: damaged checkpoint metadata: {len(meta['class_names'])} class names for {meta['num_classes']} classes"
        )
    if meta.get("preprocessing") is not None and not isinstance(meta["preprocessing"], dict):
        raise CheckpointError(f"{path}: damaged checkpoint metadata: 'preprocessing' is not a dict")


def load_checked(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` after the file checks: not a regular file, a damaged
    archive or a file ``torch.load`` cannot read raises :class:`CheckpointError` naming the file."""
    try:
        require_regular_file(path)
    except DataError as error:
        raise CheckpointError(str(error)) from None
    _check_archive(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types on foreign files (UnpicklingError, struct.error, ...)
        with open(path, "rb") as handle:
            zipped = handle.read(4) == b"PK\x03\x04"
        what = ": a damaged or cut checkpoint archive, not" if zipped else " is not a checkpoint"
        raise CheckpointError(f"{path}{what} readable with torch.load(weights_only=True): {describe_error(error)}") from None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict at ``path`` (``weights_only=True``), after checking it is one of ours.

    A missing file raises ``FileNotFoundError``; anything else wrong (not a regular file, a damaged
    archive, a foreign or truncated file) raises :class:`CheckpointError` naming the file.
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    checkpoint = load_checked(path)
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"{path} is not an nni-covid3d checkpoint (no {CHECKPOINT_KEY!r} metadata); "
            "use a .ckpt written by `nni-covid3d train` or `retrain`"
        )
    meta = checkpoint[CHECKPOINT_KEY]
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported nni-covid3d checkpoint format {version!r} (expected {FORMAT_VERSION})")
    if not isinstance(checkpoint["state_dict"], dict):
        raise CheckpointError(f"{path}: damaged checkpoint: 'state_dict' is not a dict of tensors")
    return checkpoint


def _model_state(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    state = checkpoint["state_dict"]
    return {key[len(_MODEL_PREFIX):]: value for key, value in state.items() if key.startswith(_MODEL_PREFIX)}


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model (eval mode, CPU) and the checkpoint's metadata."""
    from nni_covid3d.models import get_model

    checkpoint = read_checkpoint(path)
    meta = checkpoint[CHECKPOINT_KEY]
    _check_metadata(Path(path), meta)
    try:
        model = get_model(
            meta["model_name"], num_classes=meta["num_classes"], in_channels=meta["in_channels"], arch=meta.get("arch")
        )
    except Exception as error:  # a damaged architecture fails anywhere in the model builders
        raise CheckpointError(
            f"{path}: cannot build model {meta['model_name']!r} from the checkpoint's metadata ({describe_error(error)})"
        ) from None
    try:
        model.load_state_dict(_model_state(checkpoint), strict=True)
    except (RuntimeError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: weights do not fit model {meta['model_name']!r}: {error}") from None
    return model.eval(), meta
