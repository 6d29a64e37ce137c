"""``--channels-last``: the same numbers in the NDHWC layout, every convolution fed NDHWC, and a run
trained channels-last whose checkpoint loads into an ordinary model."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from nni_covid3d.search_spaces import build_model
from nni_covid3d.training import load_model
from nni_covid3d.training.memory_format import to_channels_last_3d, use_channels_last
from nni_covid3d.training.pipeline import TrainConfig, train_model
from tests.training.helpers import CLASSES, BlobVolumes, tiny_arch

CL = torch.channels_last_3d


def _conv_input_layouts(model: nn.Module, x: torch.Tensor) -> list[bool]:
    seen: list[bool] = []
    hooks = [m.register_forward_hook(lambda m, args, out: seen.append(args[0].is_contiguous(memory_format=CL)
                                                                    and args[0].shape[1] > 1 or m.in_channels == 1))
             for m in model.modules() if isinstance(m, nn.Conv3d)]
    model(x)
    for hook in hooks:
        hook.remove()
    return seen


def test_a_switched_model_computes_the_same_logits_with_every_convolution_fed_channels_last():
    torch.manual_seed(0)
    model = build_model(tiny_arch()).eval()
    switched = to_channels_last_3d(copy.deepcopy(model))
    x = torch.randn(2, 1, 8, 16, 16)
    assert torch.allclose(model(x), switched(x), atol=1e-5)
    assert all(_conv_input_layouts(switched, x))
    assert not all(_conv_input_layouts(model, x))  # the check can fail: an ordinary model is channels-first
    assert all(p.is_contiguous(memory_format=CL) for p in switched.parameters() if p.dim() == 5)
    assert to_channels_last_3d(switched) is switched  # idempotent: no second hook per convolution
    assert sum(len(m._forward_pre_hooks) for m in switched.modules()) == sum(
        isinstance(m, nn.Conv3d) for m in switched.modules())


def test_auto_turns_it_on_only_where_it_measured_faster():
    assert use_channels_last("on", "cpu") and not use_channels_last("off", "gpu")
    assert not use_channels_last("auto", "cpu")  # slower on the CPU (benchmarks/RESULTS.md)
    with pytest.raises(ValueError, match="--channels-last must be one of auto, on, off"):
        use_channels_last("yes")


def test_a_run_trained_channels_last_loads_into_an_ordinary_model(tmp_path):
    config = TrainConfig(epochs=2, batch_size=4, progress=False, accelerator="cpu", channels_last="on")
    result = train_model("covidnet3d", BlobVolumes(12), BlobVolumes(3, seed=1), tmp_path, class_names=CLASSES,
                         config=config, arch=tiny_arch())
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0]
    model, _ = load_model(result.best_checkpoint)
    assert not any(p.is_contiguous(memory_format=CL) and not p.is_contiguous() for p in model.parameters())
    x = BlobVolumes(3, seed=2).images
    switched = to_channels_last_3d(copy.deepcopy(model))
    assert torch.allclose(model(x), switched(x), atol=1e-5)
