"""Architecture files: export, save/load, validation errors, rebuilding, nnictl search spaces, the arch CLI."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from nni_covid3d.search_spaces import (
    ArchitectureError,
    CovidNet3DSpace,
    build_model,
    choices_from_hpo,
    export_architecture,
    hpo_search_space,
    hpo_search_space_json,
    load_architecture,
    random_architecture,
    save_architecture,
    validate_architecture,
)

from ..conftest import REPO_ROOT

SPACE_DIR = REPO_ROOT / "search_spaces"


@pytest.fixture(scope="module")
def space_s() -> CovidNet3DSpace:
    torch.manual_seed(0)
    return CovidNet3DSpace("S")


@pytest.fixture()
def arch(space_s: CovidNet3DSpace) -> dict:
    return random_architecture(space_s, 7)


def test_save_load_round_trip(arch: dict, tmp_path: Path) -> None:
    path = save_architecture({**arch, "metadata": {"strategy": "random"}}, tmp_path / "sub" / "arch.json")
    loaded = load_architecture(path)
    assert loaded["choices"] == arch["choices"]
    assert loaded["space"] == arch["space"]
    assert loaded["metadata"] == {"strategy": "random"}
    assert json.loads(path.read_text())["format_version"] == 1


def test_export_accepts_sample_executable_model_and_arch(space_s: CovidNet3DSpace, arch: dict) -> None:
    from nni.nas.space import RawFormatModelSpace

    sample = dict(arch["choices"])
    frozen = RawFormatModelSpace.from_model(space_s).freeze(sample)
    assert export_architecture(space_s, sample) == export_architecture(space_s, frozen) == export_architecture(space_s, arch)
    assert export_architecture(space_s.config, sample)["space"] == space_s.config


def test_exported_then_rebuilt_model_gives_identical_outputs(space_s: CovidNet3DSpace, arch: dict, tmp_path: Path) -> None:
    frozen = space_s.freeze(arch["choices"])
    path = save_architecture(export_architecture(space_s, arch["choices"]), tmp_path / "arch.json")
    rebuilt = build_model(path)
    rebuilt.load_state_dict(frozen.state_dict())  # strict: the same modules, cells dropped by depth included
    x = torch.randn(2, 1, 8, 32, 32)
    frozen.eval(), rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), frozen(x), rtol=0, atol=0)
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in frozen.parameters())


def _broken(arch: dict, how: str) -> dict:
    arch = copy.deepcopy(arch)
    choices = arch["choices"]
    if how == "unknown label":
        choices["s7_c1"] = "skip"
    elif how == "missing label":
        del choices["s3_c2"]
    elif how == "op out of range":
        choices["s1_c1"] = "mbconv_k9_e6"
    elif how == "depth out of range":
        choices["s2_depth"] = [4]
    elif how == "depth not a list":
        choices["s2_depth"] = 2
    elif how == "depth list of str":
        choices["s2_depth"] = ["2"]
    elif how == "op given as list":
        choices["s1_c1"] = ["skip"]
    elif how == "format version":
        arch["format_version"] = 2
    elif how == "bad space config":
        arch["space"]["preset"] = "XL"
    elif how == "unknown top-level key":
        arch["weights"] = "x.pt"
    return arch


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("unknown label", r"unknown label\(s\) \['s7_c1'\]"),
        ("missing label", r"missing label\(s\) \['s3_c2'\]"),
        ("op out of range", r"'s1_c1' = 'mbconv_k9_e6' is not one of"),
        ("depth out of range", r"'s2_depth' = \[4\] is out of range"),
        ("depth not a list", r"'s2_depth' is an input choice; its value must be a one-element list"),
        ("depth list of str", r"'s2_depth' is an input choice"),
        ("op given as list", r"'s1_c1' = \['skip'\] is not one of"),
        ("format version", r"format_version 2 is not supported"),
        ("bad space config", r"preset"),
        ("unknown top-level key", r"unknown key\(s\) \['weights'\]"),
    ],
)
def test_validation_errors_name_the_file_and_problem(arch: dict, tmp_path: Path, how: str, message: str) -> None:
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(_broken(arch, how)))
    with pytest.raises(ArchitectureError, match=message) as info:
        load_architecture(path)
    assert str(path) in str(info.value)
    with pytest.raises(ArchitectureError, match=message):
        build_model(_broken(arch, how))


def test_config_must_match_the_given_space(arch: dict, tmp_path: Path) -> None:
    path = save_architecture(arch, tmp_path / "arch.json")
    with torch.device("meta"):
        other = CovidNet3DSpace("L")
    with pytest.raises(ArchitectureError, match=r"does not match \(preset: file 'S' vs space 'L', widths"):
        load_architecture(path, other)
    with pytest.raises(ArchitectureError, match=r"num_classes: file 3 vs space 2"):
        validate_architecture(arch, {"preset": "S", "num_classes": 2})
    assert load_architecture(path, {"preset": "S"})["choices"] == arch["choices"]


def test_not_json_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ArchitectureError, match=r"bad\.json: not valid JSON"):
        load_architecture(bad)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_architecture(tmp_path / "nope.json")


@pytest.mark.parametrize("preset", ["S", "L"])
def test_committed_nnictl_search_space_matches_the_space(preset: str) -> None:
    path = SPACE_DIR / f"covidnet3d_{preset}.json"
    assert path.read_text(encoding="utf-8") == hpo_search_space_json({"preset": preset}), (
        f"{path} drifted from the space: regenerate it with "
        f"`nni-covid3d arch searchspace --preset {preset} --out {path.relative_to(REPO_ROOT)}`"
    )


@pytest.mark.parametrize("tuner_name", ["random", "tpe"])
def test_tuner_sample_rebuilds_into_a_model(tuner_name: str) -> None:
    from nni.algorithms.hpo.random_tuner import RandomTuner
    from nni.algorithms.hpo.tpe_tuner import TpeTuner

    search_space = json.loads((SPACE_DIR / "covidnet3d_S.json").read_text())
    tuner = RandomTuner(seed=0) if tuner_name == "random" else TpeTuner(seed=0)
    tuner.update_search_space(search_space)
    parameters = tuner.generate_parameters(0)
    assert set(parameters) == set(search_space)
    arch = export_architecture({"preset": "S"}, choices_from_hpo({"preset": "S"}, parameters))
    assert arch["choices"]["s1_depth"] == [parameters["s1_depth"]]
    model = build_model(arch).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 16, 64, 64)).shape == (1, 3)


def test_hpo_space_of_downsampling_variant() -> None:
    space = hpo_search_space({"preset": "S", "search_downsampling": True})
    assert space["s2_down"] == {"_type": "choice", "_value": ["2x2x2", "1x2x2"]}
    assert "s4_down" not in space


def _cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    from nni_covid3d.cli import main

    code = main(["arch", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_arch_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "arch.json"
    code, _, err = _cli(capsys, "random", "--preset", "S", "--seed", "3", "--out", str(out))
    assert code == 0, err
    assert load_architecture(out)["choices"] == random_architecture({"preset": "S"}, 3)["choices"]

    code, stdout, err = _cli(capsys, "show", str(out), "--json")
    assert code == 0, err
    report = json.loads(stdout)
    model = build_model(out)
    assert report["cost"]["params"] == sum(p.numel() for p in model.parameters())
    assert report["cost"]["flops"] > 0
    code, stdout, err = _cli(capsys, "show", str(out))
    assert code == 0, err
    assert "stage 6: 320 ch" in stdout and "parameters" in stdout and "GFLOPs" in stdout

    space_file = tmp_path / "space.json"
    code, _, err = _cli(capsys, "searchspace", "--preset", "L", "--out", str(space_file))
    assert code == 0, err
    assert space_file.read_text() == (SPACE_DIR / "covidnet3d_L.json").read_text()

    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**json.loads(out.read_text()), "format_version": 9}))
    code, _, err = _cli(capsys, "show", str(broken))
    assert code == 1
    assert "broken.json: format_version 9 is not supported" in err
    code, _, err = _cli(capsys, "show", str(tmp_path / "missing.json"))
    assert code == 1
    assert f"architecture file {tmp_path / 'missing.json'} does not exist" in err
