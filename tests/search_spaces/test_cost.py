"""Model size and FLOPs, checked on the space's extremes against a count written from the paper's layout."""
from __future__ import annotations

import math

import pytest
import torch

from nni_covid3d.search_spaces import build_model, export_architecture, model_cost
from nni_covid3d.search_spaces.cost import size_mb

from .helpers import all_choices


def _mbconv(w: int, k: int, e: int) -> tuple[int, int]:
    """(params, MACs per output voxel) of an MBConv on w channels, stride 1, BN affine included."""
    h = w * e
    params = (w * h + 2 * h) + (h * k**3 + 2 * h) + (h * w + 2 * w)
    macs = w * h + h * k**3 + h * w
    return params, macs


def _op_cost(name: str, w: int) -> tuple[int, int]:
    if name == "skip":
        return 0, 0
    _, k, e = name.split("_")
    return _mbconv(w, int(k[1:]), int(e[1:]))


def independent_count(config: dict, choices: dict, size: tuple[int, int, int]) -> tuple[int, int]:
    """(params, FLOPs) of a fixed architecture from the layout alone (no module code): convolutions and
    the linear layer count 2 FLOPs per multiply-add, as torch.utils.flop_counter does."""
    c_in = config["in_channels"]
    spatial = [math.ceil(n / 2) for n in size]  # stem: 3x3x3, stride 2, padding 1
    voxels = math.prod(spatial)
    params = c_in * 32 * 27 + 2 * 32  # stem conv + BN
    macs = voxels * 32 * c_in * 27
    params += (32 * 27 + 2 * 32) + (32 * 16 + 2 * 16)  # fixed MBConv k3 e1: depthwise + projection
    macs += voxels * (32 * 27 + 32 * 16)
    channels = 16
    for i, (w, n, s) in enumerate(zip(config["widths"], config["n_cells"], config["strides"]), start=1):
        depth = choices[f"s{i}_depth"][0] + 1 if f"s{i}_depth" in choices else n
        for j in range(1, depth + 1):
            if j == 1 and s == 2:
                stride = {"2x2x2": (2, 2, 2), "1x2x2": (1, 2, 2)}[choices.get(f"s{i}_down", "2x2x2")]
                spatial = [math.ceil(a / b) for a, b in zip(spatial, stride)]
                voxels = math.prod(spatial)
            params += channels * w + w  # calibration 1x1x1 conv with bias
            macs += voxels * channels * w
            op_params, op_macs = _op_cost(choices[f"s{i}_c{j}"], w)
            params += op_params
            macs += voxels * op_macs
            channels = w
    params += channels * 1280 + 2 * 1280 + 1280 * config["num_classes"] + config["num_classes"]
    macs += voxels * channels * 1280 + 1280 * config["num_classes"]
    return params, 2 * macs


def largest_choices(config: dict) -> dict:
    """Every depth at its maximum and every cell on its candidate with the most parameters."""
    choices = all_choices(config, "skip", depth="max")
    for i, w in enumerate(config["widths"], start=1):
        for label in [l for l in choices if l.startswith(f"s{i}_c")]:
            choices[label] = max(config["candidates"], key=lambda name: _op_cost(name, w)[0])
    return choices


@pytest.mark.parametrize("preset", ["S", "L"])
@pytest.mark.parametrize("extreme", ["skip_min_depth", "skip_full_depth", "largest"])
def test_extremes_match_an_independent_count(preset: str, extreme: str) -> None:
    config = export_architecture({"preset": preset}, all_choices({"preset": preset}, "skip"))["space"]
    if extreme == "largest":
        choices = largest_choices(config)
    else:
        choices = all_choices(config, "skip", depth="min" if extreme == "skip_min_depth" else "max")
    model = build_model(export_architecture(config, choices))
    cost = model_cost(model, (1, 16, 64, 64))
    params, flops = independent_count(config, choices, (16, 64, 64))
    assert cost.params == params
    assert cost.flops == flops
    assert cost.size_mb == pytest.approx(params * 4 / 2**20)


def test_largest_is_the_maximum_and_ordering() -> None:
    config = export_architecture({"preset": "S"}, all_choices({"preset": "S"}, "skip"))["space"]
    largest = independent_count(config, largest_choices(config), (16, 64, 64))[0]
    for op in config["candidates"]:
        assert independent_count(config, all_choices(config, op), (16, 64, 64))[0] <= largest
    # Wide late stages prefer expansion 6, narrow early ones the 7x7x7 kernel.
    assert largest_choices(config)["s1_c1"] == "mbconv_k7_e4" and largest_choices(config)["s6_c1"] == "mbconv_k3_e6"


def test_flops_follow_the_input_and_downsampling() -> None:
    config = {"preset": "S", "search_downsampling": True}
    iso = export_architecture(config, all_choices(config, "mbconv_k3_e3", down="2x2x2"))
    inplane = export_architecture(config, all_choices(config, "mbconv_k3_e3", down="1x2x2"))
    small = model_cost(build_model(iso), (1, 16, 64, 64))
    large = model_cost(build_model(iso), (1, 32, 128, 128))
    keep = model_cost(build_model(inplane), (1, 16, 64, 64))
    assert small.params == large.params == keep.params  # the stride choice adds no weights
    assert large.flops > 7 * small.flops and keep.flops > small.flops
    assert keep.flops == independent_count(inplane["space"], inplane["choices"], (16, 64, 64))[1]


def test_cost_refuses_a_space_and_bad_sizes() -> None:
    from nni_covid3d.search_spaces import CovidNet3DSpace

    with torch.device("meta"):
        space = CovidNet3DSpace("S")
    with pytest.raises(ValueError, match="fixed model"):
        model_cost(space, (1, 16, 64, 64))
    model = build_model(export_architecture({"preset": "S"}, all_choices({"preset": "S"}, "skip", depth="min")))
    with pytest.raises(ValueError, match="input_size"):
        model_cost(model, (16, 64, 64))
    assert size_mb(2**18) == 1.0
