"""Patient-level, stratified, seeded train/val/test splits; JSON save/load, including the paper's format."""
from __future__ import annotations

import json
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from nni_covid3d.atomic import atomic_write_text
from nni_covid3d.data.records import DataError, Scan

__all__ = [
    "SPLIT_NAMES", "make_patient_split", "save_split", "load_split", "check_patient_disjoint", "split_summary",
    "patient_holdout_indices",
]

SPLIT_NAMES = ("train", "val", "test")
FORMAT = "nni-covid3d-split/1"


def _patients(scans: Iterable[Scan]) -> dict[str, list[Scan]]:
    """Scans grouped by patient id (the unit of splitting)."""
    groups: dict[str, list[Scan]] = defaultdict(list)
    for scan in scans:
        groups[scan.patient_id].append(scan)
    return groups


def make_patient_split(
    scans: Sequence[Scan], *, val_fraction: float = 0.15, test_fraction: float = 0.2, seed: int = 0
) -> dict[str, list[Scan]]:
    """Split scans by patient into ``{"train", "val", "test"}``, stratified by class, reproducible by seed.

    All scans of a patient land in one split. A patient's class for stratification is its most common
    scan label. Each class with at least 3 patients gets at least one validation and one test patient
    whenever the fraction is positive.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) and sum below 1")
    groups = _patients(scans)
    by_class: dict[int, list[str]] = defaultdict(list)
    for patient_id, patient_scans in groups.items():
        label = Counter(s.label for s in patient_scans).most_common(1)[0][0]
        by_class[label].append(patient_id)
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for label in sorted(by_class):
        patients = sorted(by_class[label])
        patients = [patients[i] for i in rng.permutation(len(patients))]
        n = len(patients)
        n_test = int(round(n * test_fraction))
        n_val = int(round(n * val_fraction))
        if n >= 3:
            n_test = max(n_test, 1 if test_fraction > 0 else 0)
            n_val = max(n_val, 1 if val_fraction > 0 else 0)
        n_test = min(n_test, n)
        n_val = min(n_val, n - n_test)
        for i, patient_id in enumerate(patients):
            assignment[patient_id] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    split = {name: [s for s in scans if assignment[s.patient_id] == name] for name in SPLIT_NAMES}
    check_patient_disjoint(split)
    return split


def check_patient_disjoint(split: dict[str, Sequence[Scan]]) -> None:
    """Raise ValueError if any patient appears in two splits."""
    seen: dict[str, str] = {}
    for name, scans in split.items():
        for scan in scans:
            other = seen.setdefault(scan.patient_id, name)
            if other != name:
                raise ValueError(f"patient {scan.patient_id} is in both the {other} and the {name} split")


def split_summary(split: dict[str, Sequence[Scan]], class_names: Sequence[str]) -> str:
    lines = [f"{'split':<7}" + "".join(f"{c:>14}" for c in class_names) + f"{'total':>14}"]
    for name in SPLIT_NAMES:
        scans = split.get(name, [])
        cells = []
        for label in range(len(class_names)):
            of_class = [s for s in scans if s.label == label]
            cells.append(f"{len({s.patient_id for s in of_class})}p/{len(of_class)}s")
        lines.append(f"{name:<7}" + "".join(f"{c:>14}" for c in cells) + f"{len({s.patient_id for s in scans})}p/{len(scans)}s".rjust(14))
    return "\n".join(lines)


def save_split(split: dict[str, Sequence[Scan]], path: Path | str) -> None:
    """Write a split as JSON: per split, the (patient_id, scan_id, label_name) of each scan."""
    check_patient_disjoint(split)
    payload = {
        "format": FORMAT,
        "splits": {
            name: [{"patient_id": s.patient_id, "scan_id": s.scan_id, "label_name": s.label_name} for s in split.get(name, [])]
            for name in SPLIT_NAMES
        },
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=1))


def _is_paper_format(data: object) -> bool:
    """``{class: {patient_id: {scan_id: [slice names]}}}``."""
    if not isinstance(data, dict) or not data:
        return False
    for patients in data.values():
        if not isinstance(patients, dict):
            return False
        for scans in patients.values():
            if not isinstance(scans, dict) or not all(isinstance(v, list) for v in scans.values()):
                return False
    return True


def _subset_from_name(path: Path) -> str:
    name = path.stem.lower()
    for key, subset in (("test", "test"), ("val", "val"), ("train", "train")):
        if key in name:
            return subset
    return "test"


def load_split(
    path: Path | str, scans: Sequence[Scan], *, val_fraction: float = 0.15, seed: int = 0
) -> dict[str, list[Scan]]:
    """Read a split JSON and return the matching :class:`Scan` records per split.

    Accepts this package's format (written by :func:`save_split`) and the paper's split files
    ``{class: {patient_id: {scan_id: [slices]}}}``. A paper file holds one subset, named by its file
    name (``*test*``, ``*val*``, ``*train*``; ``test`` otherwise). For a test file the other patients
    are split into train/val; for a train file, validation patients (``val_fraction``, ``seed``) come
    out of the listed ones and the other patients are the test set; for a val file the others train.
    Unlisted scans of a listed patient join that patient's split. Every listed scan must exist in ``scans``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: split file does not exist") from None
    except json.JSONDecodeError as error:
        raise DataError(path, f"not valid JSON ({error})") from None
    index = {(s.patient_id, s.scan_id): s for s in scans}

    def lookup(patient_id, scan_id) -> Scan:
        scan = index.get((str(patient_id), str(scan_id)))
        if scan is None:
            raise DataError(path, f"lists scan {patient_id}/{scan_id}, which is not in the dataset")
        return scan

    if isinstance(data, dict) and data.get("format") == FORMAT:
        split = {name: [lookup(e["patient_id"], e["scan_id"]) for e in data["splits"].get(name, [])] for name in SPLIT_NAMES}
        listed = {s.key for subset in split.values() for s in subset}
        missing = [s.key for s in scans if s.key not in listed]
        if missing:
            warnings.warn(f"{path}: {len(missing)} scan(s) of the dataset are in no split, e.g. {missing[:3]}", stacklevel=2)
    elif _is_paper_format(data):
        subset = _subset_from_name(path)
        patients = {str(pid) for class_patients in data.values() for pid in class_patients}
        for class_name, class_patients in data.items():
            for patient_id, patient_scans in class_patients.items():
                for scan_id in patient_scans:
                    scan = lookup(patient_id, scan_id)
                    if scan.label_name != class_name:
                        raise DataError(path, f"lists scan {scan.key} under class {class_name}, but the dataset labels it {scan.label_name}")
        chosen = [s for s in scans if s.patient_id in patients]
        rest = [s for s in scans if s.patient_id not in patients]
        if subset == "test":
            inner = make_patient_split(rest, val_fraction=val_fraction, test_fraction=0.0, seed=seed)
            split = {"train": inner["train"], "val": inner["val"], "test": chosen}
        elif subset == "train":  # validation patients are carved out of the listed training patients
            inner = make_patient_split(chosen, val_fraction=val_fraction, test_fraction=0.0, seed=seed)
            split = {"train": inner["train"], "val": inner["val"], "test": rest}
        else:
            split = {"train": rest, "val": chosen, "test": []}
    else:
        raise DataError(path, "unrecognised split format (expected this package's split JSON or {class: {patient: {scan: [slices]}}})")
    check_patient_disjoint(split)
    return split


def patient_holdout_indices(groups: Sequence[str], fraction: float, seed: int = 0) -> list[int]:
    """Dataset indices of a seeded ``fraction`` of the groups (``groups``: one patient id per sample).

    Use as ``GumbelDNAS(arch_split=...)`` so that architecture steps see whole held-out patients.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    unique = sorted(set(groups))
    if len(unique) < 2:
        raise ValueError(f"need at least two patients to hold some out for architecture steps, got {len(unique)}")
    import torch  # lazily: the split helpers import without torch

    order = torch.randperm(len(unique), generator=torch.Generator().manual_seed(seed)).tolist()
    n_held = min(len(unique) - 1, max(1, round(fraction * len(unique))))
    held = {unique[i] for i in order[:n_held]}
    return [i for i, group in enumerate(groups) if group in held]
