"""The trivial control for any CT classifier: logistic regression on each scan's global intensity histogram.

It sees no spatial information at all (64 histogram bins over the display window, plus mean, standard
deviation and percentiles of the windowed volume), so whatever it scores a dataset can be solved
without looking at where or how abnormal tissue lies. Scored by patient-grouped cross-validation,
next to the majority-class rate.

    from nni_covid3d.intensity_baseline import intensity_features, cross_validate
    result = cross_validate(features, labels, patient_ids)   # features: [N, FEATURES]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    from nni_covid3d.data import Preprocessing, Scan

__all__ = ["FEATURES", "HISTOGRAM_BINS", "PERCENTILES", "CrossValidation", "cross_validate", "dataset_features",
           "fit_intensity_classifier", "intensity_features"]

HISTOGRAM_BINS = 64
PERCENTILES = (5, 25, 50, 75, 95)
#: Length of one scan's feature vector.
FEATURES = HISTOGRAM_BINS + 2 + len(PERCENTILES)


def intensity_features(volume: torch.Tensor) -> np.ndarray:
    """Global intensity features of one windowed volume ``[1, D, H, W]`` (values in [0, 1]) -> ``[FEATURES]``:
    the histogram (fractions of voxels, 64 bins over [0, 1]), mean, standard deviation and percentiles."""
    values = volume.detach().float().reshape(-1).clamp(0.0, 1.0).cpu().numpy()
    histogram, _ = np.histogram(values, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    summary = [values.mean(), values.std(), *np.percentile(values, PERCENTILES)]
    return np.concatenate([histogram / max(1, values.size), np.asarray(summary)]).astype(np.float64)


def dataset_features(scans: Sequence[Scan], preprocessing: Preprocessing) -> np.ndarray:
    """``[N, FEATURES]`` for ``scans`` (``Scan`` records) through the eval-mode ``Preprocessing``."""
    from nni_covid3d.data.transforms import preprocess_single

    return np.stack([intensity_features(preprocess_single(scan, preprocessing)) for scan in scans])


@dataclass(frozen=True)
class CrossValidation:
    """Patient-grouped cross-validation of the intensity classifier.

    ``fold_accuracy``: test accuracy per fold; ``majority_rate``: accuracy of always answering the most
    frequent class of the whole set (the floor a classifier must beat).
    """

    fold_accuracy: tuple[float, ...]
    balanced_accuracy: float
    majority_rate: float
    n_scans: int
    n_patients: int

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.fold_accuracy))


def fit_intensity_classifier(features: np.ndarray, labels: Sequence[int], *, l2: float = 1.0):
    """A fitted scikit-learn pipeline: standardised features, multinomial logistic regression (L2 strength
    ``1 / l2``); ``predict_proba(features [N, FEATURES]) -> [N, K]``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0 / l2, max_iter=2000))
    return model.fit(np.asarray(features, dtype=np.float64), np.asarray(labels))


def cross_validate(features: np.ndarray, labels: Sequence[int], groups: Sequence[str], *, folds: int = 5,
                   seed: int = 0, l2: float = 1.0) -> CrossValidation:
    """Multinomial logistic regression (standardised features, L2 strength ``1 / l2``) scored by
    ``folds``-fold cross-validation in which no patient (``groups``) is on both sides of a fold."""
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold

    x, y, g = np.asarray(features, dtype=np.float64), np.asarray(labels), np.asarray(groups)
    if not len(x) == len(y) == len(g):
        raise ValueError(f"features, labels and groups differ in length: {len(x)}, {len(y)}, {len(g)}")
    if len(set(g.tolist())) < folds:
        raise ValueError(f"{folds}-fold cross-validation needs at least {folds} patients, got {len(set(g.tolist()))}")
    predicted = np.empty_like(y)
    accuracies = []
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(x, y, g):
        model = fit_intensity_classifier(x[train], y[train], l2=l2)
        predicted[test] = model.predict(x[test])
        accuracies.append(float((predicted[test] == y[test]).mean()))
    majority = float(np.bincount(y).max() / len(y))
    return CrossValidation(tuple(accuracies), float(balanced_accuracy_score(y, predicted)), majority, len(y),
                           len(set(g.tolist())))
