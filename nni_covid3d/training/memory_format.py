"""The ``--channels-last`` option: 3D convolutions in the channels-last (NDHWC) memory format.

cuDNN and oneDNN run many 3D convolutions faster with the channels innermost. A model is switched
by storing its 5-D weights channels-last and handing every ``Conv3d`` a channels-last input (a
one-channel CT volume looks the same in both layouts, so without that the first convolution's
output, and all that follows, would stay channels-first). The numbers do not change beyond float
rounding; checkpoints load into either layout.

``auto`` turns it on only where it measured faster (``benchmarks/RESULTS.md``, *channels-last*).
"""
from __future__ import annotations

import weakref
from typing import Any

import torch
from pytorch_lightning import Callback
from torch import nn

from nni_covid3d.data.loading import uses_gpu
from nni_covid3d.devices import CHANNELS_LAST_CHOICES

__all__ = ["CHANNELS_LAST_CHOICES", "use_channels_last", "to_channels_last_3d", "ChannelsLast3d"]
#: Where ``auto`` turns it on: measured faster there (benchmarks/bench_channels_last.py). The GPU
#: figure is still to come, so ``auto`` leaves GPU runs channels-first until it is measured.
_FASTER_ON = {"cpu": False, "gpu": False}
_switched: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def use_channels_last(choice: str, accelerator: str = "auto") -> bool:
    """Whether ``--channels-last choice`` switches a run on ``accelerator`` to channels-last."""
    if choice not in CHANNELS_LAST_CHOICES:
        raise ValueError(f"--channels-last must be one of {', '.join(CHANNELS_LAST_CHOICES)}, got {choice!r}")
    if choice == "auto":
        return _FASTER_ON["gpu" if uses_gpu(accelerator) else "cpu"]
    return choice == "on"


def _channels_last_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(a.contiguous(memory_format=torch.channels_last_3d) if isinstance(a, torch.Tensor) and a.dim() == 5
                 else a for a in args)


def to_channels_last_3d(model: nn.Module) -> nn.Module:
    """Switch ``model`` (in place) to channels-last: 5-D weights stored NDHWC, every ``Conv3d`` fed
    NDHWC input. Idempotent; returns ``model``."""
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.dim() == 5:
            tensor.data = tensor.data.contiguous(memory_format=torch.channels_last_3d)
    for module in model.modules():
        if isinstance(module, nn.Conv3d) and module not in _switched:
            module.register_forward_pre_hook(_channels_last_input)
            _switched.add(module)
    return model


class ChannelsLast3d(Callback):
    """Switches the LightningModule to channels-last before fitting (after NNI's strategies have
    built their supernet, so the candidates' convolutions are switched too)."""

    def setup(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        to_channels_last_3d(pl_module)
