"""The data a trained model recorded: its checkpoint names the dataset, root, split file and
preprocessing, so any split of it can be rebuilt later without repeating flags (``evaluate``)."""
from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from nni_covid3d.training.module import CovidClassifier

__all__ = ["split_dataset"]


def split_dataset(
    classifier: CovidClassifier, *, split: str = "test", root: str | Path | None = None
) -> tuple[Dataset, list[str]]:
    """The evaluation dataset of ``split`` recorded in a trained classifier's checkpoint, and scan ids."""
    from nni_covid3d.data import Preprocessing, load_dataset, load_split, make_dataset

    source = classifier.data_source
    if not source:
        raise ValueError("the checkpoint records no dataset (trained on in-memory data): pass a dataset to evaluate")
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    root = Path(root) if root is not None else Path(source["root"])
    index = load_dataset(source["dataset"], root, task=source.get("task"))
    if list(index.class_names) != list(classifier.class_names):
        raise ValueError(f"{root}: classes {index.class_names} differ from the checkpoint's {classifier.class_names}")
    scans = load_split(source["split_file"], index.scans)[split]
    if not scans:
        raise ValueError(f"split {split!r} of {source['split_file']} is empty")
    preprocessing = Preprocessing.from_dict(classifier.preprocessing)
    dataset = make_dataset(scans, preprocessing, train=False, cache_dir=source.get("cache_dir"))
    return dataset, [f"{s.dataset}:{s.key}" for s in scans]
