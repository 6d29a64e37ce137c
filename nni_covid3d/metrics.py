"""Classification metrics for CT volumes: per class, macro, and COVID-vs-rest; plots; JSON.

All functions take integer labels ``y_true[N]`` and class probabilities ``probs[N, K]`` (rows sum to 1).
Values undefined on the given data (e.g. the AUC of a class absent from ``y_true``) are ``None``,
so the metrics JSON never holds NaN.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn import metrics as skm

from nni_covid3d.data.classes import COVID_NAMES, covid_class_index

__all__ = [
    "COVID_NAMES",
    "covid_class_index",
    "classification_metrics",
    "headline_scores",
    "save_metrics",
    "plot_roc",
    "plot_confusion_matrix",
    "plot_training_curves",
]

def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator > 0 else None


def _auc(y_binary: np.ndarray, score: np.ndarray) -> float | None:
    if y_binary.min() == y_binary.max():  # one class only: AUC undefined
        return None
    return float(skm.roc_auc_score(y_binary, score))


def _binary_scores(y_binary: np.ndarray, pred_binary: np.ndarray, score: np.ndarray) -> dict[str, Any]:
    tp = int(np.sum(y_binary & pred_binary))
    fp = int(np.sum(~y_binary & pred_binary))
    fn = int(np.sum(y_binary & ~pred_binary))
    tn = int(np.sum(~y_binary & ~pred_binary))
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return {
        "precision": precision,
        "recall": recall,
        "sensitivity": recall,
        "specificity": _ratio(tn, tn + fp),
        "f1": f1,
        "auc": _auc(y_binary, score),
        "support": int(y_binary.sum()),
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }


def _mean(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    probs: Sequence[Sequence[float]] | np.ndarray,
    class_names: Sequence[str],
    *,
    positive_class: str | None = None,
) -> dict[str, Any]:
    """All metrics of one evaluation.

    Parameters
    ----------
    y_true
        Labels ``int[N]`` in ``range(K)``.
    probs
        Probabilities ``float[N, K]``; the prediction is the argmax.
    class_names
        ``K`` names in label order.
    positive_class
        Name of the COVID-19 class for the COVID-vs-rest scores; found by name when omitted.

    Returns
    -------
    ``{"n", "accuracy", "balanced_accuracy", "per_class": {name: {...}}, "macro": {...},
    "covid_vs_rest": {...} | None, "confusion_matrix": [[...]] (rows true, columns predicted),
    "class_names", "positive_class"}``. Each score block has precision, recall (= sensitivity),
    specificity, f1, auc (one-vs-rest) and support.
    """
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    k = len(class_names)
    if p.ndim != 2 or p.shape != (len(y), k):
        raise ValueError(f"probs must have shape ({len(y)}, {k}), got {p.shape}")
    if len(y) == 0:
        raise ValueError("no samples to evaluate")
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"labels must lie in 0..{k - 1}, got {sorted(set(y.tolist()))}")
    pred = p.argmax(axis=1)

    per_class = {
        name: _binary_scores(y == c, pred == c, p[:, c]) for c, name in enumerate(class_names)
    }
    macro = {
        key: _mean([per_class[name][key] for name in class_names])
        for key in ("precision", "recall", "specificity", "f1", "auc")
    }
    macro["sensitivity"] = macro["recall"]
    # Macro one-vs-rest AUC over the classes present (sklearn's, when every class is present).
    if len(np.unique(y)) == k and k > 2:
        macro["auc"] = float(skm.roc_auc_score(y, p, multi_class="ovr", average="macro", labels=list(range(k))))

    if positive_class is not None:
        if positive_class not in class_names:
            raise ValueError(f"positive class {positive_class!r} is not one of {list(class_names)}")
        positive = list(class_names).index(positive_class)
    else:
        positive = covid_class_index(class_names)
    covid = per_class[class_names[positive]] if positive is not None else None

    recalls = [per_class[name]["recall"] for name in class_names if per_class[name]["support"] > 0]
    return {
        "n": int(len(y)),
        "class_names": list(class_names),
        "positive_class": class_names[positive] if positive is not None else None,
        "accuracy": float(np.mean(pred == y)),
        "balanced_accuracy": float(np.mean(recalls)),
        "per_class": per_class,
        "macro": macro,
        "covid_vs_rest": covid,
        "confusion_matrix": skm.confusion_matrix(y, pred, labels=list(range(k))).tolist(),
    }


def headline_scores(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """The scores a comparison reports, from :func:`classification_metrics`: accuracy, balanced accuracy,
    and COVID-vs-rest precision / sensitivity / F1 / AUC (macro averages when no class is COVID)."""
    covid = metrics.get("covid_vs_rest") or metrics["macro"]
    return {"accuracy": metrics["accuracy"], "balanced_accuracy": metrics["balanced_accuracy"],
            "precision": covid["precision"], "sensitivity": covid["recall"], "f1": covid["f1"], "auc": covid["auc"]}


def save_metrics(metrics: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``metrics`` as indented JSON (NaN refused) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(
    y_true: Sequence[int] | np.ndarray,
    probs: Sequence[Sequence[float]] | np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    *,
    title: str = "ROC (one-vs-rest)",
) -> Path:
    """One-vs-rest ROC curve per class (classes absent from ``y_true`` are left out), as a PNG."""
    plt = _pyplot()
    y = np.asarray(y_true)
    p = np.asarray(probs)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    for c, name in enumerate(class_names):
        positives = y == c
        if positives.all() or not positives.any():
            continue
        fpr, tpr, _ = skm.roc_curve(positives, p[:, c])
        ax.plot(fpr, tpr, label=f"{name} (AUC {skm.auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower right")
    return _save(fig, plt, path)


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], class_names: Sequence[str], path: str | Path) -> Path:
    """The confusion matrix (rows true, columns predicted) as a PNG."""
    plt = _pyplot()
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.imshow(m, cmap="Blues")
    ax.set(xticks=range(len(class_names)), yticks=range(len(class_names)), xlabel="predicted", ylabel="true")
    ax.set_xticklabels(class_names)
    ax.set_yticklabels(class_names)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if m[i, j] > m.max() / 2 else "black")
    return _save(fig, plt, path)


def plot_training_curves(history: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Loss and accuracy per epoch (train and val) from rows ``{"epoch", "train_loss", "val_acc", ...}``."""
    plt = _pyplot()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    for ax, keys in ((ax_loss, ("train_loss", "val_loss")), (ax_acc, ("train_acc", "val_acc", "val_bal_acc"))):
        for key in keys:
            points = [
                (row["epoch"], float(row[key])) for row in history
                if row.get(key) is not None and not math.isnan(float(row[key]))
            ]
            if points:
                ax.plot(*zip(*points), marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.legend()
    ax_loss.set_ylabel("loss")
    ax_acc.set_ylabel("accuracy")
    return _save(fig, plt, path)


def _save(fig, plt, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
