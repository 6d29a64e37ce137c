"""Shared pytest fixtures."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def venv_bin() -> Path:
    """The folder holding this interpreter's console scripts (nni-covid3d, nnictl)."""
    return Path(sys.executable).parent
