"""Train and test on a dataset on disk: reader -> patient split -> preprocessing -> training -> test.

The split is written once (``split.json``) and reused by every model and by later evaluations, so
comparisons share the same patients; the test split's dataset is only built after training, by
:func:`nni_covid3d.training.recorded.split_dataset` (called from ``evaluate_checkpoint``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from nni_covid3d.training.pipeline import TrainConfig, TrainResult, evaluate_checkpoint, train_model

__all__ = ["DataSpec", "prepare_split", "train_on_dataset", "run_experiment", "check_input_depth"]


@dataclass
class DataSpec:
    """Where a dataset lives and how it is split (by patient)."""

    dataset: str
    root: Path
    task: str | None = None  # MosMedData: "binary" (default) or "severity"
    split_file: Path | None = None  # reuse this split (ours or the paper's format)
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    split_seed: int = 0
    cache_dir: Path | None = None  # cache preprocessed volumes here
    skip_bad: bool = False

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.split_file = Path(self.split_file) if self.split_file is not None else None
        self.cache_dir = Path(self.cache_dir) if self.cache_dir is not None else None


def check_input_depth(model_name: str, depth: int) -> None:
    """Refuse a preprocessing depth the model cannot run on (DenseNet3D121 needs 32 slices)."""
    from nni_covid3d.models import MIN_DEPTH

    needed = MIN_DEPTH.get(model_name, 1)
    if depth < needed:
        raise ValueError(f"model {model_name} needs at least {needed} slices per volume, preprocessing gives {depth} (use --depth {needed})")


def prepare_split(spec: DataSpec, out_dir: str | Path):
    """Index the dataset and split it by patient: ``(index, split, split_path)``.

    Uses ``spec.split_file`` when given, else ``out_dir/split.json`` when it exists (a resumed run),
    else a new stratified patient split saved to ``out_dir/split.json``.
    """
    from nni_covid3d.data import load_dataset, load_split, make_patient_split, save_split, split_summary

    index = load_dataset(spec.dataset, spec.root, task=spec.task, skip_bad=spec.skip_bad)
    saved = Path(out_dir) / "split.json"
    if spec.split_file is not None:
        split, split_path = load_split(spec.split_file, index.scans, seed=spec.split_seed), spec.split_file
    elif saved.is_file():
        split, split_path = load_split(saved, index.scans), saved
    else:
        split = make_patient_split(
            index.scans, val_fraction=spec.val_fraction, test_fraction=spec.test_fraction, seed=spec.split_seed
        )
        save_split(split, saved)
        split_path = saved
    for name in ("train", "val"):
        if not split[name]:
            raise ValueError(f"{spec.dataset} at {spec.root}: the {name} split is empty (too few patients?)\n"
                             + split_summary(split, index.class_names))
    return index, split, Path(split_path)


def _data_source(spec: DataSpec, split_path: Path) -> dict[str, Any]:
    return {
        "dataset": spec.dataset,
        "root": str(spec.root.resolve()),
        "task": spec.task,
        "split_file": str(split_path.resolve()),
        "cache_dir": str(spec.cache_dir.resolve()) if spec.cache_dir is not None else None,
    }


def train_on_dataset(
    model: str,
    spec: DataSpec,
    out_dir: str | Path,
    *,
    preprocessing=None,
    config: TrainConfig | None = None,
    arch: Mapping[str, Any] | str | Path | None = None,
    resume: bool = False,
    callbacks=(),
) -> TrainResult:
    """Train ``model`` on the train split of ``spec``, selecting on its val split (test untouched)."""
    from nni_covid3d.data import Preprocessing, make_dataset

    config = config or TrainConfig()
    preprocessing = preprocessing or Preprocessing()
    check_input_depth(model, preprocessing.depth)
    out_dir = Path(out_dir)
    index, split, split_path = prepare_split(spec, out_dir)
    if arch is not None and not isinstance(arch, Mapping):
        from nni_covid3d.models import resolve_architecture

        arch = resolve_architecture(arch)
    cache = {"cache_dir": spec.cache_dir, "progress": config.progress}
    train = make_dataset(split["train"], preprocessing, train=True, seed=config.seed, **cache)
    val = make_dataset(split["val"], preprocessing, train=False, **cache)
    return train_model(
        model, train, val, out_dir,
        class_names=index.class_names, config=config, arch=arch,
        preprocessing=preprocessing.to_dict(), data_source=_data_source(spec, split_path),
        resume=resume, callbacks=callbacks,
    )


def run_experiment(
    model: str,
    spec: DataSpec,
    out_dir: str | Path,
    *,
    preprocessing=None,
    config: TrainConfig | None = None,
    arch: Mapping[str, Any] | str | Path | None = None,
    resume: bool = False,
    callbacks=(),
) -> tuple[TrainResult, dict[str, Any]]:
    """Train (selection on val), then evaluate the selected checkpoint once on the test split."""
    config = config or TrainConfig()
    result = train_on_dataset(model, spec, out_dir, preprocessing=preprocessing, config=config, arch=arch,
                              resume=resume, callbacks=callbacks)
    metrics = evaluate_checkpoint(result.best_checkpoint, split="test", batch_size=config.batch_size,
                                  progress=config.progress)
    return result, metrics
