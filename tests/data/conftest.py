"""Small synthetic datasets in the three real layouts, written once per test session."""
from __future__ import annotations

from pathlib import Path

import pytest

from nni_covid3d.data import write_synthetic_dataset

SIZE = 48
SLICES = (8, 14)


@pytest.fixture(scope="session")
def ccccii_root(tmp_path_factory) -> Path:
    return write_synthetic_dataset("ccccii", tmp_path_factory.mktemp("ccccii"), n_patients=9, seed=0, size=SIZE, slices=SLICES)


@pytest.fixture(scope="session")
def mosmed_root(tmp_path_factory) -> Path:
    return write_synthetic_dataset("mosmed", tmp_path_factory.mktemp("mosmed"), n_patients=10, seed=0, size=SIZE, slices=SLICES)


@pytest.fixture(scope="session")
def covidctset_root(tmp_path_factory) -> Path:
    return write_synthetic_dataset("covidctset", tmp_path_factory.mktemp("covidctset"), n_patients=8, seed=0, size=SIZE, slices=SLICES)


@pytest.fixture(scope="session")
def covidctset_folds_root(tmp_path_factory) -> Path:
    return write_synthetic_dataset(
        "covidctset", tmp_path_factory.mktemp("covidctset_folds"), n_patients=10, seed=0, size=SIZE, slices=SLICES, variant="folds"
    )
