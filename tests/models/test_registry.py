"""The model registry: names, sizes against the papers, shapes, 1-channel input."""
from __future__ import annotations

import pytest
import torch

from nni_covid3d.models import MIN_DEPTH, MODEL_NAMES, count_parameters, get_model, model_size_mb

# Sizes reported by the papers (MB = params * 4 / 2**20), e.g. EMARS (MICCAI 2022) Table 1.
PAPER_MB = {"resnet3d101": 325.21, "densenet3d121": 43.06, "mc3_18": 43.84}


@pytest.mark.parametrize("name", sorted(PAPER_MB))
def test_baseline_size_matches_paper_within_one_percent(name):
    model = get_model(name, num_classes=3, in_channels=1)
    size = model_size_mb(model)
    assert size == pytest.approx(PAPER_MB[name], rel=0.01), f"{name}: {size:.2f} MB"
    assert model_size_mb(model) == count_parameters(model) * 4 / 2**20


@pytest.mark.parametrize(
    "name, depth", [("mc3_18", 8), ("resnet3d101", 8), ("densenet3d121", MIN_DEPTH["densenet3d121"])]
)
def test_baselines_read_one_channel_volumes(name, depth):
    torch.manual_seed(0)
    model = get_model(name, num_classes=2, in_channels=1).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 1, depth, 32, 32))
    assert logits.shape == (2, 2)
    assert torch.isfinite(logits).all()


def test_mc3_18_stem_is_rebuilt_for_one_channel():
    model = get_model("mc3_18", in_channels=1)
    conv = model.stem[0]
    assert (conv.in_channels, conv.out_channels) == (1, 64)
    assert conv.kernel_size == (3, 7, 7) and conv.stride == (1, 2, 2) and conv.padding == (1, 3, 3)
    assert conv.bias is None


def test_densenet_rejects_too_few_slices():
    model = get_model("densenet3d121").eval()
    with pytest.raises(RuntimeError):
        with torch.no_grad():
            model(torch.randn(1, 1, 16, 32, 32))


def test_unknown_name_and_misplaced_arch_are_refused():
    assert set(MODEL_NAMES) == {"covidnet3d", "resnet3d101", "densenet3d121", "mc3_18"}
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        get_model("vgg")
    with pytest.raises(ValueError, match="needs an architecture"):
        get_model("covidnet3d")
    with pytest.raises(ValueError, match="takes no architecture"):
        get_model("mc3_18", arch={"a": 1})
    with pytest.raises(FileNotFoundError, match="missing.json"):
        get_model("covidnet3d", arch="/nonexistent/missing.json")
