"""``nni-covid3d benchmark``: the paper's fair comparison, with controls and confidence intervals.

On one patient split, one preprocessing and one training recipe for every trained model, per seed:

* **GumbelDNAS**: :func:`nni_covid3d.search.run_search`, then its export retrained from scratch;
* **random architectures**: K architectures drawn uniformly from the same space, each within
  ``size_tolerance`` of the searched model's parameters, retrained the same way (the
  random-sampling control at equal retraining cost), also read as *random search, best of K by
  validation*;
* **NNI's one-shot strategies** (DARTS, GumbelDARTS, Proxyless, RandomOneShot) on the same space
  through the same entry point, exported and retrained;
* **baselines** (MC3_18, DenseNet3D121, ResNet3D101) trained with the same recipe;
* **controls that need no 3D model**: the intensity-histogram logistic regression and the
  majority class.

Every trained model is selected on validation and reads the test split once. The summary gives
per method the mean ± std over seeds and a 95% bootstrap interval over test *patients* (scans of
a patient resampled together, the same resample for every method), the paired difference
searched − random, size and FLOPs, and search / training hours on the device used.

Output folder::

    out/split.json               the patient split every method uses
    out/runs/<method>/seed<S>[-<k>]/record.json   one trained model: test predictions, cost, times
    out/benchmark.md, .csv       the summary table; out/runs.csv one row per trained model
    out/benchmark.png            test accuracy against model size, the papers' points beside them
    out/benchmark.json           everything above as JSON

A run that is stopped resumes where it stopped: a model whose ``record.json`` exists is not trained again.
Several processes (one per GPU, or per core) may run the same command on the same output folder:
each model is trained by the first process that claims it (an exclusive lock on its folder, freed
when that process ends, also by a crash); the others wait for it and reuse its record.
"""
from __future__ import annotations

import fcntl
import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

__all__ = ["BenchmarkSettings", "RunRecord", "Protocol", "run_benchmark", "run_once", "run_jobs", "benchmark_split",
           "write_runs_csv",
           "intensity_controls", "summarize", "bootstrap_patients", "METRICS"]

#: Scores summarised per method (keys of ``nni_covid3d.metrics.headline_scores``).
METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "precision", "auc")
#: NNI's one-shot strategies that the protocol runs beside GumbelDNAS (``run_search`` names).
NNI_STRATEGIES = ("darts", "gumbel-darts", "proxyless", "random-oneshot")
_TITLES = {
    "gumbel-dnas": "GumbelDNAS (searched)", "random": "Random arch, size-matched (mean of K)",
    "random-best": "Random search (best of K by val)", "darts": "DARTS (NNI)", "gumbel-darts": "GumbelDARTS (NNI)",
    "proxyless": "Proxyless (NNI)", "random-oneshot": "RandomOneShot (NNI)", "mc3_18": "MC3_18",
    "densenet3d121": "DenseNet3D121", "resnet3d101": "ResNet3D101",
    "histogram": "Intensity histogram + LR (no 3D)", "majority": "Majority class",
}


@dataclass(frozen=True)
class BenchmarkSettings:
    """The protocol's budgets (the same for every method).

    Attributes:
        seeds: independent repetitions (search, random draws, initialisation, loaders).
        random_archs: K, random architectures per seed.
        size_tolerance: a random architecture's parameters lie within this fraction of the searched one's.
        strategies: NNI one-shot strategies run beside GumbelDNAS.
        baselines: human-designed models trained with the same recipe.
        space_config: ``CovidNet3DSpace`` arguments of the searched space.
        search_epochs, retrain_epochs, batch_size, learning_rate: search and training recipe (Adam, cosine).
        depth, height, width: the preprocessed input size.
        bootstrap: resamples of the test patients for the confidence intervals.
        accelerator: Lightning's accelerator.
        precision: Lightning's precision of every search and training (``nni_covid3d.precision``).
    """

    seeds: int = 3
    random_archs: int = 4
    size_tolerance: float = 0.25
    strategies: tuple[str, ...] = NNI_STRATEGIES
    baselines: tuple[str, ...] = ("mc3_18",)
    space_config: Mapping[str, Any] = field(default_factory=lambda: {"preset": "S"})
    search_epochs: int = 24
    retrain_epochs: int = 40
    batch_size: int = 16
    learning_rate: float = 4e-3
    depth: int = 16
    height: int = 64
    width: int = 64
    bootstrap: int = 1000
    accelerator: str = "cpu"
    precision: str = "32-true"

    def __post_init__(self) -> None:
        from nni_covid3d.models import MODEL_NAMES
        from nni_covid3d.precision import check_precision

        check_precision(self.precision, self.accelerator)

        if self.seeds < 1 or self.random_archs < 1:
            raise ValueError(f"seeds and random_archs must be at least 1, got {self.seeds} and {self.random_archs}")
        if not 0.0 < self.size_tolerance < 1.0:
            raise ValueError(f"size_tolerance must lie in (0, 1), got {self.size_tolerance}")
        unknown = [s for s in self.strategies if s not in NNI_STRATEGIES]
        if unknown:
            raise ValueError(f"unknown strategies {unknown}; choose from {NNI_STRATEGIES}")
        unknown = [b for b in self.baselines if b not in MODEL_NAMES or b == "covidnet3d"]
        if unknown:
            raise ValueError(f"unknown baselines {unknown}; choose from {[m for m in MODEL_NAMES if m != 'covidnet3d']}")


class JsonRecord:
    """A dataclass kept as one JSON file, written atomically (a stopped run never leaves half a record)."""

    #: What a damaged file of this kind is called, and what deleting it redoes.
    damaged = "damaged benchmark record", "train that model again"

    @classmethod
    def load(cls, path: Path) -> Any:
        """The record at ``path``; a damaged one raises ``ValueError`` naming the file (delete it to redo it)."""
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: {cls.damaged[0]} ({error}); delete it to {cls.damaged[1]}") from None

    def save(self, path: Path) -> None:
        from nni_covid3d.atomic import atomic_write_text

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(asdict(self)) + "\n")


@dataclass
class RunRecord(JsonRecord):
    """One model, tested once: its test predictions (scan order of the split), cost and times."""

    method: str
    seed: int
    member: int
    params: int | None
    size_mb: float | None
    gflops: float | None
    val_score: float | None
    search_seconds: float
    train_seconds: float
    labels: list[int]
    probs: list[list[float]]
    architecture: dict[str, Any] | None = None

    def correct(self, index: np.ndarray | None = None) -> np.ndarray:
        """Whether each test scan (or the scans at ``index``, e.g. a bootstrap resample) is classified right."""
        labels, probs = np.asarray(self.labels), np.asarray(self.probs)
        if index is not None:
            labels, probs = labels[index], probs[index]
        return probs.argmax(1) == labels

    def accuracy(self, index: np.ndarray | None = None) -> float:
        """Test accuracy (of the scans at ``index`` when given)."""
        return float(np.mean(self.correct(index)))



class _CountingDataset:
    """Wraps the test dataset and counts item reads, so the summary can show each model read it once."""

    def __init__(self, dataset: Any) -> None:
        self.dataset, self.reads = dataset, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        self.reads += 1
        return self.dataset[index]


# ------------------------------------------------------------------------------------ statistics
@contextmanager
def _claim(run_dir: Path, log: Callable[[str], None]) -> Iterator[None]:
    """Hold the exclusive lock of ``run_dir`` (waiting while another process holds it)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / ".lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"[benchmark] {run_dir} is being trained by another process; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def try_claim(lock_path: Path) -> Iterator[bool]:
    """Hold the exclusive lock file ``lock_path`` if no other process holds it: yields whether it does."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_jobs(jobs: Sequence[tuple[Path, Callable[[], Any]]], log: Callable[[str], None] = print) -> None:
    """Run every ``(lock_file, job)``, skipping past jobs another process holds and coming back to them
    (waiting) at the end, so that several processes on one output folder share the work. Jobs must be
    idempotent (e.g. built from :func:`run_once`): one may find its work already done."""
    deferred = []
    for lock_path, job in jobs:
        with try_claim(lock_path) as claimed:
            if claimed:
                job()
            else:
                deferred.append((lock_path, job))
    for lock_path, job in deferred:
        log(f"[benchmark] waiting for another process to finish {lock_path.parent}")
        with lock_path.open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                job()
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def run_once(run_dir: Path, make: Callable[[Path], RunRecord], log: Callable[[str], None] = print) -> RunRecord:
    """The record in ``run_dir``, made by ``make(run_dir)`` unless it exists (see the module docstring
    for several processes sharing one folder)."""
    path = run_dir / "record.json"
    if not path.is_file():
        with _claim(run_dir, log):
            if not path.is_file():  # not written meanwhile by the process that held the claim
                log(f"[benchmark] {run_dir} ...")
                record = make(run_dir)
                record.save(path)
                return record
    log(f"[benchmark] reusing {path}")
    return RunRecord.load(path)


def _scores(labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> dict[str, float]:
    from nni_covid3d.metrics import classification_metrics, headline_scores

    scores = headline_scores(classification_metrics(labels, probs, class_names))
    return {key: (np.nan if scores[key] is None else float(scores[key])) for key in METRICS}


def bootstrap_patients(patients: Sequence[str], n: int, seed: int) -> list[np.ndarray]:
    """``n`` resamples of the scans, drawing whole patients with replacement: scan index arrays."""
    rng = np.random.default_rng(seed)
    groups: dict[str, list[int]] = {}
    for index, patient in enumerate(patients):
        groups.setdefault(patient, []).append(index)
    members = list(groups.values())
    return [np.concatenate([members[i] for i in rng.integers(len(members), size=len(members))]) for _ in range(n)]


def _method_score(runs: Sequence[RunRecord], index: np.ndarray | None, class_names: Sequence[str]) -> dict[str, float]:
    """Mean over seeds of each seed's mean over its models (random: K models a seed)."""
    by_seed: dict[int, list[dict[str, float]]] = {}
    for run in runs:
        labels, probs = np.asarray(run.labels), np.asarray(run.probs)
        if index is not None:
            labels, probs = labels[index], probs[index]
        by_seed.setdefault(run.seed, []).append(_scores(labels, probs, class_names))
    per_seed = [{k: np.nanmean([s[k] for s in scores]) for k in METRICS} for scores in by_seed.values()]
    return {k: float(np.nanmean([s[k] for s in per_seed])) for k in METRICS}


def summarize(records: Sequence[RunRecord], patients: Sequence[str], class_names: Sequence[str], *,
              bootstrap: int = 1000, seed: int = 0, searched: str = "gumbel-dnas",
              control: str = "random") -> dict[str, Any]:
    """Per-method scores (mean, std over seeds, bootstrap CI over test patients) and paired differences.

    Returns ``{"methods": [{method, title, runs, seeds, <metric>_mean, <metric>_std, <metric>_lo,
    <metric>_hi, params, size_mb, gflops, search_hours, train_hours}], "paired": [{versus, metric,
    difference, lo, hi}]}``.
    """
    import warnings

    methods: dict[str, list[RunRecord]] = {}
    for record in records:
        methods.setdefault(record.method, []).append(record)
    resamples = bootstrap_patients(patients, bootstrap, seed)
    rows, boot = [], {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample without some class has no AUC
        for method, runs in methods.items():
            point = _method_score(runs, None, class_names)
            boot[method] = [_method_score(runs, index, class_names) for index in resamples]
            seeds = sorted({r.seed for r in runs})
            per_seed = [_method_score([r for r in runs if r.seed == s], None, class_names) for s in seeds]
            row: dict[str, Any] = {"method": method, "title": _TITLES.get(method, method), "runs": len(runs),
                                   "seeds": len(seeds)}
            for key in METRICS:
                samples = np.array([b[key] for b in boot[method]])
                row[f"{key}_mean"] = point[key]
                row[f"{key}_std"] = float(np.nanstd([s[key] for s in per_seed], ddof=1)) if len(seeds) > 1 else 0.0
                row[f"{key}_lo"], row[f"{key}_hi"] = (float(np.nanpercentile(samples, q)) for q in (2.5, 97.5))
            for key in ("params", "size_mb", "gflops"):
                values = [getattr(r, key) for r in runs if getattr(r, key) is not None]
                row[key] = float(np.mean(values)) if values else None
            row["search_hours"] = sum(r.search_seconds for r in runs) / 3600 / len(seeds)
            row["train_hours"] = sum(r.train_seconds for r in runs) / 3600 / len(seeds)
            rows.append(row)
        paired = []
        if searched in boot:
            point = {r["method"]: r for r in rows}
            for versus in (control, f"{control}-best"):
                if versus not in boot:
                    continue
                for key in ("accuracy", "balanced_accuracy"):
                    differences = np.array([a[key] - b[key] for a, b in zip(boot[searched], boot[versus])])
                    paired.append({"searched": searched, "versus": versus, "metric": key,
                                   "difference": point[searched][f"{key}_mean"] - point[versus][f"{key}_mean"],
                                   "lo": float(np.nanpercentile(differences, 2.5)),
                                   "hi": float(np.nanpercentile(differences, 97.5))})
    return {"methods": rows, "paired": paired}


# ---------------------------------------------------------------------------------------- output
def write_runs_csv(path: Path, records: Sequence[RunRecord]) -> None:
    """One row per trained model: its record without the predictions, and its test accuracy."""
    _write_csv(path, [{key: value for key, value in asdict(r).items() if key not in ("labels", "probs", "architecture")}
                      | {"accuracy": r.accuracy()} for r in records])


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    from nni_covid3d.tables import csv_table

    path.write_text(csv_table(rows, [(key, key) for key in rows[0]]))


def _interval(row: Mapping[str, Any], key: str, scale: float) -> str:
    mean = row[f"{key}_mean"]
    if mean is None or np.isnan(mean):
        return "–"
    digits = 1 if scale == 100 else 3
    return (f"{mean * scale:.{digits}f} ± {row[f'{key}_std'] * scale:.{digits}f} "
            f"[{row[f'{key}_lo'] * scale:.{digits}f}, {row[f'{key}_hi'] * scale:.{digits}f}]")


def markdown_report(summary: Mapping[str, Any], context: Mapping[str, Any]) -> str:
    """The summary as Markdown: the method table, the paired differences, the papers' reported rows."""
    from nni_covid3d.compare import markdown_table as comparison_table, reported_rows
    from nni_covid3d.tables import markdown_table

    lines = [f"# Benchmark: {context['dataset_title']}", "",
             f"Split (by patient): {context['split_sizes']}. Input {context['input_size']}; "
             f"{context['seeds']} seed(s); K = {context['random_archs']} random architectures per seed, each within "
             f"±{context['size_tolerance']:.0%} of the searched model's parameters; device {context['device']}; "
             f"wall time {60 * context['wall_hours']:.1f} min. Every model: search / training on train patients, selected "
             "on validation, tested once. Scores: mean ± std over seeds [95% bootstrap interval over test "
             "patients]; sensitivity, precision and AUC are COVID-vs-rest.", ""]
    table = []
    for row in summary["methods"]:
        table.append({"method": row["title"], "models": row["runs"],
                      **{key: row[key] for key in ("params", "size_mb", "gflops")},
                      **{key: _interval(row, key, 1 if key == "auc" else 100) for key in METRICS},
                      "search_min": 60 * row["search_hours"], "train_min": 60 * row["train_hours"]})
    lines.append(markdown_table(table, (
        ("method", "Method"), ("models", "Models"), ("params", "Params"), ("size_mb", "MB"), ("gflops", "GFLOPs"),
        ("accuracy", "Acc %"), ("balanced_accuracy", "Bal. acc %"), ("sensitivity", "Sensitivity %"),
        ("precision", "Precision %"), ("auc", "AUC"), ("search_min", "Search min/seed"),
        ("train_min", "Train min/seed"))).rstrip())
    if summary["paired"]:
        paired = [{"versus": _TITLES.get(entry["versus"], entry["versus"]), "metric": entry["metric"],
                   "difference": f"{100 * entry['difference']:+.1f}",
                   "interval": f"[{100 * entry['lo']:+.1f}, {100 * entry['hi']:+.1f}]"} for entry in summary["paired"]]
        lines += ["", "Paired difference, same test patients resampled together (percentage points):", "",
                  markdown_table(paired, (("versus", "Searched −"), ("metric", "Metric"), ("difference", "Difference"),
                                          ("interval", "95% interval"))).rstrip()]
    if any(row["method"] == "random-oneshot" for row in summary["methods"]):
        lines += ["", "NNI's RandomOneShot draws its paths and its (arbitrary) export from an unseeded generator "
                  "(`nni.mutable` `Categorical.random`): its row differs between runs of the same seed; every "
                  "other row is reproducible."]
    reported = reported_rows([context["dataset"]])
    if reported:
        lines += ["", "The papers' reported figures (their own splits and input sizes; not reproduced here):", "",
                  comparison_table(reported).rstrip()]
    return "\n".join(lines) + "\n"


def _plot(records: Sequence[RunRecord], dataset: str, path: Path) -> Path:
    from nni_covid3d.compare import reported_rows
    from nni_covid3d.metrics import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    markers = "os^vD<>phX*"
    methods = list(dict.fromkeys(r.method for r in records if r.size_mb is not None))
    for i, method in enumerate(methods):
        runs = [r for r in records if r.method == method]
        accuracy = [100 * r.accuracy() for r in runs]
        ax.scatter([r.size_mb for r in runs], accuracy, marker=markers[i % len(markers)], label=_TITLES.get(method, method),
                   alpha=0.5 if method == "random" else 0.9)
    for row in reported_rows([dataset]):
        ax.scatter([row["size_mb"]], [row["accuracy"]], marker="*", facecolors="none", edgecolors="grey", s=90)
        ax.annotate(f"{row['model']} (reported)", (row["size_mb"], row["accuracy"]), fontsize=7, color="grey")
    ax.set_xscale("log")
    ax.set_xlabel("model size (MB, float32 parameters)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy against size: one marker per model and seed")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------- protocol
def _device(accelerator: str) -> str:
    import torch

    from nni_covid3d.data.loading import uses_gpu

    if uses_gpu(accelerator) and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({torch.get_num_threads()} threads)"


def benchmark_split(dataset: str, root: str | Path, out: Path, *, test_root: str | Path | None = None,
                    task: str | None = None, split_seed: int = 0, val_fraction: float = 0.15,
                    test_fraction: float = 0.2) -> tuple[dict[str, list[Any]], list[str]]:
    """The patient split of a benchmark and its class names, written to ``out/split.json`` (read back on resume).

    Without ``test_root`` the patients of ``root`` are split into train / validation / test. With it,
    ``root`` gives train and validation only and every scan of ``test_root`` (a cohort in the same
    layout, e.g. ``nni-covid3d synth --seed 1``) is the test set.

    Raises:
        ValueError: the test cohort's classes differ from the training root's, or the two share
            patient ids (one line naming both roots).
    """
    from nni_covid3d.data import load_dataset, load_split, make_patient_split, save_split

    index = load_dataset(dataset, root, task=task)
    scans, test_scans = list(index.scans), []
    if test_root is not None:
        test_index = load_dataset(dataset, test_root, task=task)

        def present(scans: Sequence[Any], names: Sequence[str]) -> list[str]:
            return [names[label] for label in sorted({scan.label for scan in scans})]

        train_classes, test_classes = present(index.scans, index.class_names), present(test_index.scans,
                                                                                       test_index.class_names)
        if list(test_index.class_names) != list(index.class_names) or train_classes != test_classes:
            raise ValueError(f"test cohort {test_root} has classes {test_classes}, the training root {root} has "
                             f"{train_classes}: they must be the same")
        shared = sorted({s.patient_id for s in index.scans} & {s.patient_id for s in test_index.scans})
        if shared:
            raise ValueError(f"test cohort {test_root} shares {len(shared)} patient id(s) with the training root {root} "
                             f"(e.g. {', '.join(shared[:3])}): write the test cohort with another synth seed")
        test_scans = list(test_index.scans)
        test_fraction = 0.0
    split_path = out / "split.json"
    if split_path.is_file():  # a resumed benchmark keeps its split
        split = load_split(split_path, scans + test_scans)
    else:
        split = make_patient_split(scans, val_fraction=val_fraction, test_fraction=test_fraction, seed=split_seed)
        if test_root is not None:
            split["test"] = test_scans
        save_split(split, split_path)
    return split, list(index.class_names)


def intensity_controls(split: Mapping[str, Sequence[Any]], class_names: Sequence[str], preprocessing: Any) -> list[RunRecord]:
    """The two controls without a 3D model, scored on ``split["test"]``: the intensity-histogram
    logistic regression (fit on train + validation) and the majority class of the training split."""
    from nni_covid3d.intensity_baseline import dataset_features, fit_intensity_classifier

    test_labels = [scan.label for scan in split["test"]]
    train_scans = list(split["train"]) + list(split["val"])
    start = time.perf_counter()
    histogram = fit_intensity_classifier(dataset_features(train_scans, preprocessing), [s.label for s in train_scans])
    histogram_probs = histogram.predict_proba(dataset_features(split["test"], preprocessing))
    frequencies = np.bincount([s.label for s in split["train"]], minlength=len(class_names)) / len(split["train"])
    return [RunRecord("histogram", 0, 0, None, None, None, None, 0.0, time.perf_counter() - start, test_labels,
                      histogram_probs.tolist()),
            RunRecord("majority", 0, 0, None, None, None, None, 0.0, 0.0, test_labels,
                      [frequencies.tolist()] * len(test_labels))]


class Protocol:
    """What every model of a benchmark shares: the data, the recipe, the test set read once per model.

    Args:
        settings: the budgets and recipe (:class:`BenchmarkSettings`).
        split: ``{"train", "val", "test"}`` scans (:func:`benchmark_split`).
        class_names: class names in label order.
        cache_dir: the preprocessed-volume cache shared by every model.
    """

    def __init__(self, settings: BenchmarkSettings, split: Mapping[str, Sequence[Any]], class_names: Sequence[str],
                 cache_dir: Path) -> None:
        from nni_covid3d.data import Preprocessing, make_dataset
        from nni_covid3d.search import SearchData
        from nni_covid3d.search_spaces import CovidNet3DSpace

        self.settings, self.class_names = settings, list(class_names)
        self.preprocessing = Preprocessing(depth=settings.depth, height=settings.height, width=settings.width)
        self.data = SearchData.from_split(split, class_names, self.preprocessing, cache_dir=cache_dir)
        self.test_set = _CountingDataset(make_dataset(split["test"], self.preprocessing, train=False, cache_dir=cache_dir))
        self.test_labels = [scan.label for scan in split["test"]]
        self.test_patients = [scan.patient_id for scan in split["test"]]
        self.input_size = (1, settings.depth, settings.height, settings.width)
        self.space_config = CovidNet3DSpace(**{"num_classes": len(class_names), **settings.space_config}).config
        self.trained = 0

    def cost(self, model: Any) -> dict[str, Any]:
        """Parameters, size and GFLOPs of ``model`` at the benchmark's input size."""
        from nni_covid3d.search_spaces.cost import model_cost

        measured = model_cost(model, self.input_size)
        return {"params": measured.params, "size_mb": measured.size_mb, "gflops": measured.flops / 1e9}

    def train_and_test(self, name: str, run_dir: Path, seed: int,
                       arch: Mapping[str, Any] | None) -> tuple[float | None, list[list[float]], float]:
        """Train ``name`` (``covidnet3d`` with ``arch``) with the shared recipe in ``run_dir/train``; test the
        validation-selected checkpoint once. Returns (validation score, test probabilities, training seconds)."""
        from nni_covid3d.training import load_classifier
        from nni_covid3d.training.pipeline import TrainConfig, predict, train_model

        settings = self.settings
        config = TrainConfig(epochs=settings.retrain_epochs, batch_size=settings.batch_size,
                             learning_rate=settings.learning_rate, seed=seed, accelerator=settings.accelerator,
                             precision=settings.precision, progress=False)
        start = time.perf_counter()
        # A model whose training was stopped continues from its last epoch (resume is exact).
        resume = (run_dir / "train" / "checkpoints" / "last.ckpt").is_file()
        result = train_model(name, self.data.train, self.data.val, run_dir / "train", class_names=self.class_names,
                             config=config, arch=arch, preprocessing=self.preprocessing.to_dict(), resume=resume)
        seconds = time.perf_counter() - start
        labels, probs = predict(load_classifier(result.best_checkpoint).model, self.test_set,
                                batch_size=settings.batch_size, progress=False)
        self.trained += 1
        if labels.tolist() != self.test_labels:
            raise RuntimeError(f"{run_dir}: test predictions are not in the split's scan order")
        return result.best_score, probs.tolist(), seconds

    def search(self, strategy: str, seed: int, search_dir: Path, options: Mapping[str, Any] | None = None,
               epochs: int | None = None) -> tuple[Any, float]:
        """Search with ``strategy`` (and its ``options``) on the training patients for ``epochs`` (default
        ``search_epochs``); a stopped GumbelDNAS search resumes, NNI's strategies start again. Returns
        (``SearchResult``, seconds)."""
        from nni_covid3d.search import run_search

        settings = self.settings
        start = time.perf_counter()
        resume = strategy == "gumbel-dnas" and (search_dir / "checkpoints" / "last.ckpt").is_file()
        if not resume and search_dir.exists():
            shutil.rmtree(search_dir)
        result = run_search(self.data, self.space_config, strategy=strategy, strategy_options=options,
                            epochs=epochs or settings.search_epochs, batch_size=settings.batch_size,
                            learning_rate=settings.learning_rate, seed=seed, out_dir=search_dir, resume=resume,
                            accelerator=settings.accelerator, precision=settings.precision)
        return result, time.perf_counter() - start

    def searched_record(self, strategy: str, seed: int, run_dir: Path, architecture: Mapping[str, Any],
                        search_seconds: float, *, training_seed: int | None = None) -> RunRecord:
        """The record of ``architecture``, found by ``strategy`` with search seed ``seed``, retrained and
        tested; trained with ``training_seed`` (``member`` of the record) when given, else with ``seed``."""
        from nni_covid3d.search_spaces import build_model

        train_seed = seed if training_seed is None else training_seed
        val_score, probs, train_seconds = self.train_and_test("covidnet3d", run_dir, train_seed, architecture)
        return RunRecord(strategy, seed, training_seed or 0, **self.cost(build_model(architecture)), val_score=val_score,
                         search_seconds=search_seconds, train_seconds=train_seconds, labels=self.test_labels,
                         probs=probs, architecture=dict(architecture))


def run_benchmark(
    dataset: str,
    root: str | Path,
    out_dir: str | Path,
    settings: BenchmarkSettings = BenchmarkSettings(),
    *,
    task: str | None = None,
    test_root: str | Path | None = None,
    split_seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the protocol (see the module docstring) on ``dataset`` at ``root``; returns the summary JSON.

    With ``test_root``, ``root`` gives train and validation patients only and every model is tested on
    all of ``test_root`` (:func:`benchmark_split`).
    """
    from nni_covid3d.compare import DATASET_TITLES
    from nni_covid3d.models import get_model
    from nni_covid3d.search_spaces import build_model, random_architecture
    from nni_covid3d.search_spaces.cost import count_parameters

    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    split, class_names = benchmark_split(dataset, root, out, test_root=test_root, task=task, split_seed=split_seed,
                                         val_fraction=val_fraction, test_fraction=test_fraction)
    protocol = Protocol(settings, split, class_names, out / "cache")
    test_labels = protocol.test_labels

    def run(method: str, seed: int, member: int, make: Callable[[Path], RunRecord]) -> RunRecord:
        return run_once(out / "runs" / method / (f"seed{seed}" + (f"-{member}" if member else "")), make, log)

    def searched(strategy: str, seed: int) -> Callable[[Path], RunRecord]:
        def make(run_dir: Path) -> RunRecord:
            result, search_seconds = protocol.search(strategy, seed, run_dir / "search")
            return protocol.searched_record(strategy, seed, run_dir, result.architecture, search_seconds)
        return make

    def random_arch(arch: dict[str, Any], seed: int, member: int) -> Callable[[Path], RunRecord]:
        def make(run_dir: Path) -> RunRecord:
            val_score, probs, train_seconds = protocol.train_and_test("covidnet3d", run_dir, seed, arch)
            return RunRecord("random", seed, member, **protocol.cost(build_model(arch)), val_score=val_score,
                             search_seconds=0.0, train_seconds=train_seconds, labels=test_labels, probs=probs,
                             architecture=arch)
        return make

    def baseline(name: str, seed: int) -> Callable[[Path], RunRecord]:
        def make(run_dir: Path) -> RunRecord:
            val_score, probs, train_seconds = protocol.train_and_test(name, run_dir, seed, None)
            return RunRecord(name, seed, 0, **protocol.cost(get_model(name, num_classes=len(class_names))),
                             val_score=val_score, search_seconds=0.0, train_seconds=train_seconds, labels=test_labels,
                             probs=probs)
        return make

    def size_matched(target_params: int, seed: int, k: int) -> list[dict[str, Any]]:
        found, lo, hi = [], (1 - settings.size_tolerance) * target_params, (1 + settings.size_tolerance) * target_params
        for draw in range(20000):
            arch = random_architecture(protocol.space_config, seed=seed * 100_000 + draw)
            if lo <= count_parameters(build_model(arch)) <= hi:
                found.append(arch)
                if len(found) == k:
                    return found
        raise RuntimeError(f"only {len(found)} of 20000 random architectures lie within ±{settings.size_tolerance:.0%} "
                           f"of {target_params:,} parameters; widen size_tolerance")

    records: list[RunRecord] = []
    for seed in range(settings.seeds):
        searched_record = run("gumbel-dnas", seed, 0, searched("gumbel-dnas", seed))
        records.append(searched_record)
        members = [run("random", seed, k + 1, random_arch(arch, seed, k + 1))
                   for k, arch in enumerate(size_matched(searched_record.params, seed, settings.random_archs))]
        records += members
        best = max(members, key=lambda r: -np.inf if r.val_score is None else r.val_score)
        # Random search with K trials: the best member on validation, at the cost of all K trainings.
        records.append(RunRecord(**{**asdict(best), "method": "random-best", "member": 0,
                                    "train_seconds": sum(m.train_seconds for m in members)}))
        records += [run(strategy, seed, 0, searched(strategy, seed)) for strategy in settings.strategies]
        records += [run(name, seed, 0, baseline(name, seed)) for name in settings.baselines]

    # Controls without a 3D model (deterministic; one "seed").
    records += intensity_controls(split, class_names, protocol.preprocessing)

    summary = summarize(records, protocol.test_patients, class_names, bootstrap=settings.bootstrap)
    context = {
        "dataset": dataset, "dataset_title": DATASET_TITLES.get(dataset, dataset), "root": str(root),
        "split_sizes": ", ".join(f"{name} {len({s.patient_id for s in scans})} patients / {len(scans)} scans"
                                 for name, scans in split.items()),
        "input_size": "x".join(map(str, protocol.input_size[1:])), "seeds": settings.seeds,
        "random_archs": settings.random_archs, "size_tolerance": settings.size_tolerance,
        "device": _device(settings.accelerator), "wall_hours": (time.perf_counter() - started) / 3600,
        "models_trained_now": protocol.trained, "test_reads": protocol.test_set.reads,
        "test_scans": len(protocol.test_set), "test_root": None if test_root is None else str(test_root),
        "settings": {**asdict(settings), "space_config": dict(settings.space_config)},
    }
    (out / "benchmark.md").write_text(markdown_report(summary, context))
    _write_csv(out / "benchmark.csv", summary["methods"])
    write_runs_csv(out / "runs.csv", records)
    _plot(records, dataset, out / "benchmark.png")
    result = {"context": context, **summary}
    (out / "benchmark.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result
