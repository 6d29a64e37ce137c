"""The CovidNet3D space: labels, shapes, forward/backward of random architectures, serialisable config."""
from __future__ import annotations

import json

import nni
import pytest
import torch
from nni.mutable import Categorical, CategoricalMultiple
from nni.nas.space import SimplifiedModelSpace

from nni_covid3d.search_spaces import (
    DEFAULT_CANDIDATES,
    CovidNet3DSpace,
    build_model,
    choice_domains,
    export_architecture,
    random_architecture,
)
from nni_covid3d.search_spaces.covidnet3d import normalize_config, output_spatial_size

from .helpers import all_choices


def test_labels_are_stable_and_readable() -> None:
    with torch.device("meta"):
        space = CovidNet3DSpace("S")
    domains = dict(space.simplify())
    expected_cells = [f"s{i}_c{j}" for i, n in enumerate([4, 4, 4, 4, 4, 1], start=1) for j in range(1, n + 1)]
    assert [label for label in domains if "_c" in label] == expected_cells
    assert [label for label in domains if label.endswith("_depth")] == [f"s{i}_depth" for i in range(1, 6)]
    assert len(domains) == 21 + 5
    for label, domain in domains.items():
        assert "/" not in label
        if label.endswith("_depth"):
            assert isinstance(domain, CategoricalMultiple) and list(domain.values) == [0, 1, 2, 3]
        else:
            assert isinstance(domain, Categorical) and list(domain.values) == list(DEFAULT_CANDIDATES)
            assert list(domain.values).count("skip") == 1


def test_downsampling_labels_only_on_stride_two_stages() -> None:
    with torch.device("meta"):
        space = CovidNet3DSpace("S", search_downsampling=True, search_depth=False)
    downs = {label: list(d.values) for label, d in space.simplify().items() if label.endswith("_down")}
    assert downs == {f"s{i}_down": ["2x2x2", "1x2x2"] for i in (1, 2, 3, 5)}
    assert space.shape_changing_labels() == ["s1_down", "s2_down", "s3_down", "s5_down"]
    assert not any(label.endswith("_depth") for label in space.simplify())


@pytest.mark.parametrize(
    ("preset", "size", "seed", "search_downsampling"),
    [
        ("S", (16, 64, 64), 1, True),
        ("L", (16, 64, 64), 2, True),
        pytest.param("S", (32, 128, 128), 3, False, marks=pytest.mark.slow),
        pytest.param("L", (32, 128, 128), 4, False, marks=pytest.mark.slow),
    ],
)
def test_random_architecture_forward_backward(preset: str, size: tuple[int, int, int], seed: int, search_downsampling: bool) -> None:
    arch = random_architecture({"preset": preset, "search_downsampling": search_downsampling}, seed)
    model = build_model(arch)
    model.train()
    x = torch.randn(1, 1, *size)
    logits = model(x)
    assert logits.shape == (1, 3)
    logits.sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
    downsampling = {k: v for k, v in arch["choices"].items() if k.endswith("_down")}
    features = model.features(x)
    assert features.shape == (1, 1280, *output_spatial_size(arch["space"], size, downsampling))


@pytest.mark.parametrize(
    ("down", "size", "expected"),
    [
        ("2x2x2", (16, 64, 64), (1, 2, 2)),
        ("1x2x2", (16, 64, 64), (8, 2, 2)),
        ("2x2x2", (32, 128, 128), (1, 4, 4)),
        ("1x2x2", (32, 128, 128), (16, 4, 4)),
    ],
)
def test_downsampling_choice_keeps_slices(down: str, size, expected) -> None:
    config = {"preset": "S", "search_downsampling": True}
    arch = export_architecture(config, all_choices(config, "skip", depth="min", down=down))
    model = build_model(arch).eval()
    with torch.no_grad():
        features = model.features(torch.randn(1, 1, *size))
    assert tuple(features.shape[2:]) == expected
    assert output_spatial_size(arch["space"], size, {k: down for k in arch["choices"] if k.endswith("_down")}) == expected


def test_depth_choice_drops_cells() -> None:
    config = {"preset": "S"}
    choices = all_choices(config, "mbconv_k3_e3", depth="max")
    choices["s2_depth"] = [1]  # keep cells 1-2 of stage 2
    model = build_model(export_architecture(config, choices))
    assert [len(stage.cells) for stage in model.stages] == [4, 2, 4, 4, 4, 1]
    assert not any(name.startswith("stages.1.cells.2") for name, _ in model.named_parameters())


def test_constructor_arguments_are_recorded_and_serialisable() -> None:
    with torch.device("meta"):
        space = CovidNet3DSpace("L", num_classes=2, search_downsampling=True)
    assert space.trace_kwargs["preset"] == "L" and space.trace_kwargs["num_classes"] == 2
    json.dumps(space.args)  # every argument, defaults included, is plain JSON
    assert normalize_config(space.args) == space.config
    restored = nni.load(nni.dump(space.trace_copy()))
    assert restored.trace_kwargs == space.trace_kwargs


def test_nni_multi_trial_path_rebuilds_the_same_model() -> None:
    """NNI re-creates the space from its recorded arguments under model_context (multi-trial engines)."""
    space = CovidNet3DSpace("S", num_classes=2)
    arch = random_architecture(space, 5)
    executable = SimplifiedModelSpace.from_model(space).freeze(arch["choices"])
    restored = nni.load(nni.dump(executable))  # crosses a process boundary in a real experiment
    via_nni = restored.executable_model()
    ours = build_model(arch)
    assert {k: v.shape for k, v in via_nni.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}
    ours.load_state_dict(via_nni.state_dict())
    x = torch.randn(1, 1, 8, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), via_nni.eval()(x), rtol=0, atol=0)


def test_fixed_model_has_no_choices_left() -> None:
    model = build_model(random_architecture({"preset": "S"}, 0))
    assert model.simplify() == {}
    assert choice_domains({"preset": "S"})  # the space itself still has them


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"preset": "XL"}, "preset"),
        ({"widths": [8, 8]}, "one entry per stage"),
        ({"strides": [2, 2, 3, 1, 2, 1]}, "stride"),
        ({"candidates": ["mbconv_k3_e3", "skip", "skip"]}, "duplicate"),
        ({"candidates": ["sep_conv_3x3"]}, "candidate operation"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_bad_constructor_arguments_are_refused(config: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        with torch.device("meta"):
            CovidNet3DSpace(**config)


def test_unknown_config_key_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown space config key"):
        normalize_config({"colour": "red"})


def test_custom_stages_and_candidates() -> None:
    config = {"widths": [8, 16], "n_cells": [2, 1], "strides": [2, 1], "candidates": ["mbconv_k3_e3", "skip"],
              "head_channels": 32, "num_classes": 4, "in_channels": 2}
    domains = choice_domains(config)
    assert list(domains) == ["s1_depth", "s1_c1", "s1_c2", "s2_c1"]
    model = build_model(random_architecture(config, 0))
    assert model(torch.randn(2, 2, 8, 16, 16)).shape == (2, 4)


def test_fast_freeze_copies_the_chosen_weights_like_nni_generic_freeze() -> None:
    """``space.freeze`` (rebuild + copy) against NNI's generic recursive freeze (deep copies)."""
    from nni.nas.nn.pytorch import MutableModule

    config = {"widths": [8, 8, 16, 16, 16, 16], "n_cells": [3, 2, 2, 1, 2, 1], "stem_channels": 8,
              "first_block_channels": 8, "head_channels": 16, "search_downsampling": True}
    space = CovidNet3DSpace(**config)
    for parameter in space.parameters():  # every weight distinct, so a wrong copy cannot pass
        torch.nn.init.normal_(parameter)
    for seed in (0, 3):
        sample = random_architecture(config, seed)["choices"]
        fast = space.freeze(sample).eval()
        generic = MutableModule.freeze(space, sample)
        for stage in generic.stages:
            stage.prune()
        generic.eval()
        assert fast.state_dict().keys() == generic.state_dict().keys()
        for key, value in generic.state_dict().items():
            assert torch.equal(fast.state_dict()[key], value), key
        x = torch.randn(2, 1, 8, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(fast(x), generic(x), rtol=0, atol=0)


def test_space_dry_run_forward() -> None:
    space = CovidNet3DSpace(widths=[8] * 6, head_channels=16, search_downsampling=True)
    assert space(torch.randn(2, 1, 8, 32, 32)).shape == (2, 3)
