"""The shape phantoms give their labels away to no classifier of the intensity histogram.

The control (:mod:`nni_covid3d.intensity_baseline`): multinomial logistic regression on each scan's
global intensity features, patient-grouped 5-fold cross-validation. On shape phantoms it must score
at most the majority-class rate + 0.10; on intensity phantoms of the same settings it scores far more
(so the control does see a difference in intensity when there is one). The control reads the
phantoms at their own in-plane size, as the demo's model does.
"""
from __future__ import annotations

import pytest

from nni_covid3d.data import Preprocessing, load_dataset, write_synthetic_dataset
from nni_covid3d.cli.demo import DemoSettings
from nni_covid3d.intensity_baseline import CrossValidation, cross_validate, dataset_features

DEMO = DemoSettings()
MARGIN = 0.10


def _control(layout: str, root, *, task: str | None = None, depth: int = DEMO.depth, size: int = DEMO.size) -> CrossValidation:
    index = load_dataset(layout, root, task=task)
    features = dataset_features(index.scans, Preprocessing(depth=depth, height=size, width=size))
    return cross_validate(features, [s.label for s in index.scans], [s.patient_id for s in index.scans])


def _demo_data(root, *, phantom: str, patients: int = DEMO.patients):
    return write_synthetic_dataset("ccccii", root, n_patients=patients, seed=DEMO.seed, size=DEMO.phantom_size,
                                   slices=DEMO.slices, involvement=DEMO.involvement, phantom=phantom)


def test_demo_phantoms_give_nothing_away_through_the_histogram(tmp_path):
    """The demo's own data (``make demo``'s settings, all its patients), read at its own size."""
    assert (DEMO.size, DEMO.phantom) == (DEMO.phantom_size, "shape")
    result = _control("ccccii", _demo_data(tmp_path / "shape", phantom="shape"))
    assert result.n_patients == DEMO.patients
    assert result.accuracy <= result.majority_rate + MARGIN, result


def test_intensity_phantoms_of_the_same_settings_are_solved_by_the_histogram(tmp_path):
    result = _control("ccccii", _demo_data(tmp_path / "intensity", phantom="intensity", patients=60))
    assert result.accuracy >= result.majority_rate + 0.3, result


@pytest.mark.parametrize("layout, task", [("covidctset", None), ("mosmed", "binary"), ("mosmed", "severity")])
def test_other_layouts_give_nothing_away_through_the_histogram(tmp_path_factory, layout, task):
    """COVID-CTset (HU TIFF slices, covid vs normal) and MosMedData (NIfTI; COVID vs normal, and the
    CT-0..CT-4 grades, whose lesions spread further with the same tissue)."""
    root = tmp_path_factory.getbasetemp() / f"difficulty_{layout}"
    if not root.exists():
        write_synthetic_dataset(layout, root, n_patients=100, seed=0, size=64)
    result = _control(layout, root, task=task)
    assert result.accuracy <= result.majority_rate + MARGIN, result
