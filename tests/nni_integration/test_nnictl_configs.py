"""The nnictl configs are valid NNI configs whose trial commands, search spaces and comments fit the code."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

CONFIGS = sorted((REPO_ROOT / "examples" / "nnictl").glob("*.yml"))


def load(name: str) -> dict:
    return yaml.safe_load((REPO_ROOT / "examples" / "nnictl" / name).read_text())


def test_the_expected_configs_exist() -> None:
    names = {path.name for path in CONFIGS}
    assert {"arch_search.yml", "baselines_grid.yml", "dnas_hpo.yml", "arch_search_remote.yml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_is_accepted_by_nni(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nni.experiment.config import ExperimentConfig

    # The remote config names ~/.ssh/id_rsa, which NNI's validation requires to exist.
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa").write_text("not a real key\n")
    config = ExperimentConfig.load(path).canonical_copy()
    assert config.trial_concurrency >= 1 and config.max_trial_number >= 1
    assert config.tuner.name in ("TPE", "Evolution", "Random", "GridSearch")


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_trial_command_parses_and_comments_say_how_to_go_real(path: Path) -> None:
    from nni_covid3d.nnictl.trial import build_parser

    text = path.read_text()
    command = shlex.split(yaml.safe_load(text)["trialCommand"])
    assert command[:3] == ["python", "-m", "nni_covid3d.trial"], command
    args = build_parser().parse_args(command[3:])
    assert args.mode in ("arch", "baseline", "dnas")
    if "remote" in path.name:
        assert args.data_root is not None and args.accelerator == "gpu"
    else:  # local configs default to synthetic data and say which lines to change
        assert args.data_root is None
        assert "--data-root" in text and "--accelerator gpu" in text and "trialGpuNumber" in text


def test_arch_search_space_file_is_the_committed_model_space() -> None:
    # (That the committed JSON equals the space's hpo_search_space is the search-space tests' job.)
    config = load("arch_search.yml")
    space_file = (REPO_ROOT / "examples" / "nnictl" / config["searchSpaceFile"]).resolve()
    assert space_file == REPO_ROOT / "search_spaces" / "covidnet3d_S.json"
    space = json.loads(space_file.read_text())
    assert {"s1_c1", "s1_depth", "s6_c1"} <= set(space)
    assert all(entry["_type"] == "choice" and entry["_value"] for entry in space.values())
    assert "--preset S" in config["trialCommand"]


def test_baseline_grid_names_models_and_datasets_the_trial_knows() -> None:
    from nni_covid3d.models import MIN_DEPTH, MODEL_NAMES
    from nni_covid3d.nnictl.trial import DATASETS, build_parser

    config = load("baselines_grid.yml")
    assert config["tuner"]["name"] == "GridSearch"
    models = config["searchSpace"]["model"]["_value"]
    datasets = config["searchSpace"]["dataset"]["_value"]
    assert set(models) == set(MODEL_NAMES) - {"covidnet3d"}
    assert set(datasets) == set(DATASETS)
    assert config["maxTrialNumber"] >= len(models) * len(datasets)
    depth = build_parser().parse_args(shlex.split(config["trialCommand"])[3:]).size[0]
    assert all(depth >= MIN_DEPTH.get(m, 1) for m in models)


def test_dnas_search_space_keeps_the_temperature_schedule_valid() -> None:
    config = load("dnas_hpo.yml")
    space = config["searchSpace"]
    assert set(space) == {"tau_init", "tau_final", "arc_learning_rate"}
    assert min(space["tau_init"]["_value"]) >= max(space["tau_final"]["_value"])
    assert config["tuner"]["classArgs"]["optimize_mode"] == "maximize"


def test_trial_without_parameters_or_with_bad_ones_fails_clearly(tmp_path: Path, capsys, monkeypatch) -> None:
    import nni.trial

    from nni_covid3d.nnictl.trial import main

    # main() calls nni.get_next_parameter(), which sets NNI's module-level trial state: restore it.
    monkeypatch.setattr(nni.trial, "_params", nni.trial._params)
    monkeypatch.setattr(nni.trial, "_intermediate_seq", nni.trial._intermediate_seq)

    assert main(["arch", "--output-dir", str(tmp_path)]) == 1
    assert "no architecture parameters" in capsys.readouterr().err
    assert main(["baseline", "--params", '{"model": "vgg", "dataset": "ccccii"}', "--output-dir", str(tmp_path)]) == 1
    assert "parameter 'model' = 'vgg'" in capsys.readouterr().err
    assert main(["dnas", "--params", '{"tau": 1}', "--output-dir", str(tmp_path)]) == 1
    assert "unknown DNAS parameter(s) ['tau']" in capsys.readouterr().err
    assert main(["arch", "--params", '{"s1_c1": "skip"}', "--output-dir", str(tmp_path)]) == 1
    assert "invalid architecture" in capsys.readouterr().err
