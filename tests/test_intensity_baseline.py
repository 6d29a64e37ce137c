"""The intensity-histogram control: features, patient-grouped cross-validation, and what it can and cannot see."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nni_covid3d.intensity_baseline import FEATURES, HISTOGRAM_BINS, cross_validate, dataset_features, intensity_features


def test_features_are_a_histogram_and_summary_statistics():
    volume = torch.rand(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    features = intensity_features(volume)
    assert features.shape == (FEATURES,)
    assert features[:HISTOGRAM_BINS].sum() == pytest.approx(1.0)
    assert features[HISTOGRAM_BINS] == pytest.approx(float(volume.mean()), rel=1e-5)
    # Shuffling the voxels changes nothing: the control is blind to where tissue lies.
    shuffled = volume.reshape(-1)[torch.randperm(volume.numel())].reshape(volume.shape)
    np.testing.assert_allclose(intensity_features(shuffled), features, rtol=1e-6)


def _volumes(n: int, rng: np.random.Generator, *, spatial: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class 1 has a bright cube; with ``spatial`` class 0 has the same bright voxels scattered."""
    labels = rng.integers(0, 2, n)
    features = []
    for label in labels:
        volume = rng.normal(0.3, 0.05, (1, 8, 16, 16)).clip(0, 1)
        cube = np.zeros_like(volume, dtype=bool)
        cube[0, 2:6, 4:8, 4:8] = True
        if label == 0:
            cube = rng.permutation(cube.reshape(-1)).reshape(cube.shape) if spatial else np.zeros_like(cube)
        volume[cube] = 0.8
        features.append(intensity_features(torch.from_numpy(volume)))
    return np.stack(features), labels, np.asarray([f"p{i}" for i in range(n)])


def test_solves_intensity_differences_and_not_spatial_ones():
    rng = np.random.default_rng(0)
    intensity = cross_validate(*_volumes(60, rng, spatial=False))
    spatial = cross_validate(*_volumes(60, rng, spatial=True))
    assert intensity.accuracy > 0.95
    assert spatial.accuracy <= spatial.majority_rate + 0.15, spatial


def test_folds_never_split_a_patient():
    # Each patient: random features and a random label, shared by its 3 scans. Split by scan, a
    # patient's other scans would give its label away; split by patient there is nothing to learn.
    rng = np.random.default_rng(1)
    patient_features, patient_labels = rng.normal(size=(40, FEATURES)), rng.integers(0, 2, 40)
    features = np.repeat(patient_features, 3, axis=0) + rng.normal(scale=0.01, size=(120, FEATURES))
    labels, groups = np.repeat(patient_labels, 3), np.repeat([f"p{i}" for i in range(40)], 3)
    result = cross_validate(features, labels, groups)
    assert result.n_patients == 40 and result.n_scans == 120
    assert result.accuracy < 0.75, result


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="differ in length"):
        cross_validate(np.zeros((4, FEATURES)), [0, 1, 0], ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="at least 5 patients"):
        cross_validate(np.zeros((4, FEATURES)), [0, 1, 0, 1], ["a", "a", "b", "b"])


def test_features_of_a_phantom_dataset(tmp_path):
    from nni_covid3d.data import Preprocessing, load_dataset
    from nni_covid3d.data.synthetic import write_synthetic_dataset

    root = write_synthetic_dataset("ccccii", tmp_path / "ccccii", n_patients=6, seed=0, size=32, slices=(8, 10))
    index = load_dataset("ccccii", root)
    features = dataset_features(index.scans, Preprocessing(depth=8, height=32, width=32))
    assert features.shape == (len(index.scans), FEATURES)
    assert np.allclose(features[:, :HISTOGRAM_BINS].sum(axis=1), 1.0)


def test_cli_reports_accuracy_beside_the_majority_rate(tmp_path, capsys):
    import json

    from nni_covid3d.cli import main
    from nni_covid3d.data.synthetic import write_synthetic_dataset

    root = write_synthetic_dataset("ccccii", tmp_path / "ccccii", n_patients=10, seed=0, size=32, slices=(8, 10))
    assert main(["data", "intensity-control", "--dataset", "ccccii", "--root", str(root), "--depth", "8",
                 "--height", "32", "--width", "32", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["patients"] == 10 and len(result["fold_accuracy"]) == 5
    assert 0.0 <= result["accuracy"] <= 1.0 and 0.0 < result["majority_rate"] < 1.0
    # Fewer patients than folds: a clear error naming the dataset root, not a traceback.
    small = write_synthetic_dataset("ccccii", tmp_path / "small", n_patients=3, seed=0, size=32, slices=(8, 10))
    assert main(["data", "intensity-control", "--dataset", "ccccii", "--root", str(small), "--depth", "8",
                 "--height", "32", "--width", "32"]) != 0
    assert str(small) in capsys.readouterr().err
