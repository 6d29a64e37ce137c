"""The distribution installs as one namespaced package with a working console script."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import nni_covid3d
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("name", ["nni_covid3d", "nni_covid3d.strategies", "nni_covid3d.search_spaces"])
def test_package_and_namespaced_subpackages_import(name):
    module = importlib.import_module(name)
    assert module.__file__ is not None


def test_namespaced_subpackages_resolve_to_top_level_folders():
    import nni_covid3d.search_spaces
    import nni_covid3d.strategies

    assert Path(nni_covid3d.strategies.__file__).resolve().parent == REPO_ROOT / "strategies"
    assert Path(nni_covid3d.search_spaces.__file__).resolve().parent == REPO_ROOT / "search_spaces"


@pytest.mark.parametrize("bare_name", ["strategies", "search_spaces"])
def test_bare_subpackage_names_are_not_importable_outside_the_repo(bare_name, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", f"import {bare_name}"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "ModuleNotFoundError" in done.stderr


def test_nnictl_runs_from_the_venv(venv_bin):
    nnictl = venv_bin / "nnictl"
    assert nnictl.exists(), f"{nnictl} missing"
    done = subprocess.run([str(nnictl), "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("3.0")


def test_cli_version(venv_bin):
    done = subprocess.run([str(venv_bin / "nni-covid3d"), "--version"], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stdout.strip() == f"nni-covid3d {nni_covid3d.__version__}"


def test_cli_info_reports_stack(venv_bin):
    done = subprocess.run(
        [str(venv_bin / "nni-covid3d"), "info", "--json"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    import monai
    import nni
    import torch

    assert report["versions"]["nni"] == nni.__version__ == "3.0"
    assert report["versions"]["torch"] == torch.__version__.split("+")[0] == "2.14.1"
    assert report["versions"]["monai"] == monai.__version__
    assert report["versions"]["lightning"] is not None
    assert report["nnictl"] is not None and report["nnictl"].startswith("3.0")
    assert report["gpu"]["available"] == torch.cuda.is_available()


def test_cli_without_command_prints_help_and_fails(venv_bin):
    done = subprocess.run([str(venv_bin / "nni-covid3d")], capture_output=True, text=True)
    assert done.returncode == 2
    assert "COMMAND" in done.stdout
