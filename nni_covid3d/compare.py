"""Compare models on the same splits and preprocessing, beside the papers' reported figures.

For each dataset, every model is trained from scratch with the same patient split, preprocessing and
training settings, selected on validation, and tested once. The table (Markdown + CSV) has: model,
params, MB, GFLOPs, CPU latency per scan, accuracy, balanced accuracy, precision, sensitivity, F1,
AUC. Precision, sensitivity, F1 and AUC are COVID-vs-rest (NCP / COVID class against the others),
the reading under which the papers' binary-task figures are comparable. Reported rows come from
``nni_covid3d/reference/covidnet3d_reported.csv`` and are marked ``reported``.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence


__all__ = [
    "COLUMNS",
    "DATASET_TITLES",
    "reported_rows",
    "result_row",
    "run_comparison",
    "write_table",
    "markdown_table",
]

DATASET_TITLES = {"ccccii": "CC-CCII", "mosmed": "MosMedData", "covidctset": "COVID-CTset"}
#: The comparison table's columns, ``(key, title)``.
COLUMNS = (
    ("dataset", "Dataset"), ("model", "Model"), ("source", "Source"), ("params", "Params"), ("size_mb", "MB"),
    ("gflops", "GFLOPs"), ("latency_ms", "CPU ms/scan"), ("accuracy", "Acc %"), ("balanced_accuracy", "Bal. acc %"),
    ("precision", "Precision %"), ("sensitivity", "Sensitivity %"), ("f1", "F1 %"), ("auc", "AUC"),
)


def _percent(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def result_row(dataset: str, model_title: str, metrics: Mapping[str, Any], cost: Mapping[str, Any]) -> dict[str, Any]:
    """One table row of ours from test metrics (``classification_metrics``) and :func:`measure_cost`."""
    from nni_covid3d.metrics import headline_scores

    scores = headline_scores(metrics)
    return {
        "dataset": DATASET_TITLES.get(dataset, dataset),
        "model": model_title,
        "source": "ours",
        **{key: cost.get(key) for key in ("params", "size_mb", "gflops", "latency_ms")},
        **{key: value if key == "auc" else _percent(value) for key, value in scores.items()},
    }


def reported_rows(datasets: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The papers' figures for ``datasets`` (keys or titles; all when ``None``), marked reported."""
    text = resources.files("nni_covid3d").joinpath("reference/covidnet3d_reported.csv").read_text()
    wanted = None if datasets is None else {DATASET_TITLES.get(d, d) for d in datasets}
    rows = []
    for record in csv.DictReader(io.StringIO(text)):
        if wanted is not None and record["dataset"] not in wanted:
            continue
        rows.append({
            "dataset": record["dataset"], "model": record["model"], "source": f"reported ({record['source']})",
            "params": None, "size_mb": float(record["size_mb"]), "gflops": None, "latency_ms": None,
            "accuracy": float(record["accuracy"]), "balanced_accuracy": None,
            "precision": float(record["precision"]), "sensitivity": float(record["sensitivity"]),
            "f1": float(record["f1"]), "auc": None,
        })
    return rows


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of :data:`COLUMNS` as a Markdown table (reported rows in italics)."""
    from nni_covid3d.tables import markdown_table as render

    return render(rows, COLUMNS)


def write_table(rows: Sequence[Mapping[str, Any]], out_dir: str | Path, stem: str = "comparison") -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.csv`` in ``out_dir``; returns both paths."""
    from nni_covid3d.tables import write_tables

    note = ("Ours: trained from scratch on the same patient split and preprocessing, selected on validation, "
            "tested once. Precision, sensitivity, F1 and AUC are COVID-vs-rest. *Italic rows are the papers' "
            "reported figures* (their own data splits and input sizes), not reproduced here.\n\n")
    return write_tables(rows, COLUMNS, out_dir, stem, note=note)


@dataclass
class ComparisonResult:
    rows: list[dict[str, Any]]
    markdown: Path
    csv: Path
    runs: dict[str, dict[str, Path]] = field(default_factory=dict)  # dataset -> model -> run folder


def run_comparison(
    roots: Mapping[str, str | Path],
    models: Sequence[str],
    out_dir: str | Path,
    *,
    archs: Mapping[str, str | Path | Mapping[str, Any]] | None = None,
    preprocessing=None,
    config=None,
    task: str | None = None,
    cache_dir: str | Path | None = None,
    split_seed: int = 0,
    include_reported: bool = True,
    latency_threads: int | None = 1,
    split_files: Mapping[str, str | Path] | None = None,
    cost_only: Sequence[str] = (),
) -> ComparisonResult:
    """Train and test every model on every dataset (``roots``: dataset name -> root folder).

    ``archs`` maps a dataset name (or ``"*"`` for all) to the architecture of ``covidnet3d``.
    Runs live in ``out_dir/<dataset>/<model>/``; a run whose test metrics exist is reused, so an
    interrupted comparison continues where it stopped. All models of a dataset share
    ``out_dir/<dataset>/split.json``, or ``split_files[dataset]`` when given (e.g. the search's split,
    so the searched model is tested on patients the search never saw). Models in ``cost_only`` get a
    row with their size, FLOPs and latency but no training (e.g. ResNet3D101 on a CPU-only demo).
    """
    from nni_covid3d.data import Preprocessing
    from nni_covid3d.models import DISPLAY_NAMES, MIN_DEPTH, get_model, resolve_architecture
    from nni_covid3d.search_spaces.cost import measure_cost
    from nni_covid3d.training.experiment import DataSpec, check_input_depth, prepare_split, run_experiment
    from nni_covid3d.training.pipeline import TrainConfig

    out_dir = Path(out_dir)
    preprocessing = preprocessing or Preprocessing(depth=32)
    config = config or TrainConfig()
    archs = dict(archs or {})
    split_files = dict(split_files or {})
    for model in models:  # fail before any training
        check_input_depth(model, preprocessing.depth)
    if set(models) & set(cost_only):
        raise ValueError(f"models both trained and cost-only: {sorted(set(models) & set(cost_only))}")
    rows: list[dict[str, Any]] = []
    runs: dict[str, dict[str, Path]] = {}
    for dataset, root in roots.items():
        dataset_dir = out_dir / dataset
        spec = DataSpec(dataset, Path(root), task=task if dataset == "mosmed" else None, split_seed=split_seed,
                        cache_dir=Path(cache_dir) if cache_dir is not None else None,
                        split_file=split_files.get(dataset))
        index, _, split_path = prepare_split(spec, dataset_dir)
        spec.split_file = split_path
        for model in models:
            arch = None
            if model == "covidnet3d":
                arch = archs.get(dataset, archs.get("*"))
                if arch is None:
                    raise ValueError(f"covidnet3d on {dataset} needs an architecture (--arch FILE or --arch {dataset}=FILE)")
                arch = resolve_architecture(arch, len(index.class_names), 1)
            run_dir = dataset_dir / model
            metrics_path = run_dir / "eval_test" / "metrics.json"
            if metrics_path.is_file():
                metrics = json.loads(metrics_path.read_text())
            else:
                resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
                _, metrics = run_experiment(model, spec, run_dir, preprocessing=preprocessing, config=config,
                                            arch=arch, resume=resume)
            net = get_model(model, num_classes=len(index.class_names), in_channels=1, arch=arch)
            cost = measure_cost(net, preprocessing.shape, threads=latency_threads)
            rows.append(result_row(dataset, DISPLAY_NAMES.get(model, model), metrics, cost))
            runs.setdefault(dataset, {})[model] = run_dir
        for model in cost_only:
            net = get_model(model, num_classes=len(index.class_names), in_channels=1)
            shape = list(preprocessing.shape)
            shape[1] = max(shape[1], MIN_DEPTH.get(model, 1))  # DenseNet3D121 cannot run below 32 slices
            cost = measure_cost(net, shape, threads=latency_threads)
            note = "" if shape[1] == preprocessing.depth else f", at {shape[1]} slices"
            rows.append({"dataset": DATASET_TITLES.get(dataset, dataset), "model": DISPLAY_NAMES.get(model, model),
                         "source": f"ours (cost only, not trained{note})", **cost})
        if include_reported:
            rows.extend(reported_rows([dataset]))
    md, path_csv = write_table(rows, out_dir)
    return ComparisonResult(rows=rows, markdown=md, csv=path_csv, runs=runs)
