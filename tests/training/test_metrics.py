"""Metrics against hand-computed small cases."""
from __future__ import annotations

import json

import numpy as np
import pytest

from nni_covid3d.metrics import (
    classification_metrics,
    covid_class_index,
    plot_confusion_matrix,
    plot_roc,
    plot_training_curves,
    save_metrics,
)

CLASSES = ["CP", "NCP", "Normal"]
Y = [0, 0, 1, 1, 1, 2]
PROBS = [
    [0.7, 0.2, 0.1],
    [0.3, 0.6, 0.1],
    [0.2, 0.7, 0.1],
    [0.1, 0.8, 0.1],
    [0.5, 0.4, 0.1],
    [0.1, 0.1, 0.8],
]  # predictions 0, 1, 1, 1, 0, 2


def test_three_class_case_by_hand():
    m = classification_metrics(Y, PROBS, CLASSES)
    assert m["n"] == 6
    assert m["confusion_matrix"] == [[1, 1, 0], [1, 2, 0], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    cp, ncp, normal = (m["per_class"][c] for c in CLASSES)
    assert (cp["precision"], cp["recall"], cp["specificity"], cp["f1"]) == pytest.approx((1 / 2, 1 / 2, 3 / 4, 1 / 2))
    assert (ncp["precision"], ncp["recall"], ncp["specificity"], ncp["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3, 2 / 3))
    assert (normal["precision"], normal["recall"], normal["specificity"], normal["f1"]) == pytest.approx((1, 1, 1, 1))
    # NCP one-vs-rest AUC: positive scores .7 .8 .4 vs negative .2 .6 .1 -> 8 of 9 pairs ordered.
    assert ncp["auc"] == pytest.approx(8 / 9)
    # CP: positives .7 .3 vs negatives .2 .1 .5 .1 -> (4 + 3) of 8 pairs.
    assert cp["auc"] == pytest.approx(7 / 8)
    assert normal["auc"] == pytest.approx(1.0)
    assert m["macro"]["auc"] == pytest.approx((8 / 9 + 7 / 8 + 1) / 3)
    assert m["macro"]["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["macro"]["sensitivity"] == m["macro"]["recall"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["macro"]["f1"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    # COVID-vs-rest is the NCP class.
    assert m["positive_class"] == "NCP" and m["covid_vs_rest"] == ncp
    assert (ncp["tp"], ncp["fp"], ncp["fn"], ncp["tn"]) == (2, 1, 1, 2)


def test_binary_case_and_undefined_values():
    # Normal / COVID; COVID probabilities .9 .4 .6 .2 for labels 1 1 0 0.
    probs = [[0.1, 0.9], [0.6, 0.4], [0.4, 0.6], [0.8, 0.2]]
    m = classification_metrics([1, 1, 0, 0], probs, ["Normal", "COVID"])
    covid = m["covid_vs_rest"]
    assert m["positive_class"] == "COVID"
    assert (covid["tp"], covid["fp"], covid["fn"], covid["tn"]) == (1, 1, 1, 1)
    assert covid["auc"] == pytest.approx(3 / 4)
    assert covid["sensitivity"] == covid["specificity"] == pytest.approx(0.5)
    # Only one class present: AUC undefined -> None, and JSON stays valid (no NaN).
    m = classification_metrics([1, 1], [[0.2, 0.8], [0.7, 0.3]], ["Normal", "COVID"])
    assert m["covid_vs_rest"]["auc"] is None
    assert m["per_class"]["Normal"]["recall"] is None
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    json.dumps(m, allow_nan=False)


def test_agrees_with_sklearn_on_random_data():
    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50)
    probs = rng.dirichlet([1, 1, 1], 50)
    m = classification_metrics(y, probs, CLASSES)
    pred = probs.argmax(1)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert m["macro"]["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["macro"]["auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr"))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="shape"):
        classification_metrics([0, 1], [[1.0, 0.0, 0.0]], CLASSES)
    with pytest.raises(ValueError, match="labels must lie"):
        classification_metrics([0, 3], [[1, 0, 0], [0, 1, 0]], CLASSES)
    with pytest.raises(ValueError, match="positive class"):
        classification_metrics(Y, PROBS, CLASSES, positive_class="flu")
    assert covid_class_index(["CT-0", "x"]) is None
    assert covid_class_index(["normal", "covid"]) == 1


def test_files_are_written(tmp_path):
    m = classification_metrics(Y, PROBS, CLASSES)
    assert json.loads(save_metrics(m, tmp_path / "m.json").read_text())["accuracy"] == pytest.approx(4 / 6)
    history = [{"epoch": 0, "train_loss": 1.0, "val_loss": 1.1, "train_acc": 0.4, "val_acc": 0.5},
               {"epoch": 1, "train_loss": 0.5, "val_loss": None, "train_acc": 0.8, "val_acc": 0.9}]
    for path in (
        plot_roc(Y, PROBS, CLASSES, tmp_path / "roc.png"),
        plot_confusion_matrix(m["confusion_matrix"], CLASSES, tmp_path / "cm.png"),
        plot_training_curves(history, tmp_path / "curves.png"),
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
