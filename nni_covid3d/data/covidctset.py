"""COVID-CTset: 16-bit TIFF slices (HU = raw - 1024), one scan = patient x series, as the paper.

Two layouts are recognised:

* raw: ``root/<group>/patient<N>/SR_<k>/IM*.tif`` with labels from ``root/Patient_details.csv``
  (a patient column and a class column; values "covid"/"normal"), or, without that file, from the
  group folder's name (containing "covid" or "normal");
* folds: a flat folder of selected slices ``<group>_patient<N>_SR_<k>_IM*.tif`` (anywhere under the
  root) plus ``root/CSV/{train,validation,test}{1..5}.csv`` with columns ``filename,class``.
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

from nni_covid3d.data.classes import class_names_for
from nni_covid3d.data.io import TIFF_SUFFIXES, read_csv
from nni_covid3d.data.collect import MASK_FOLDER, ScanCollector, visible_children
from nni_covid3d.data.records import DataError, DatasetIndex, Scan, natural_key
from nni_covid3d.data.single import scan_folder_files

__all__ = ["read_covidctset", "read_fold_split", "parse_class"]

CLASS_NAMES = class_names_for("covidctset")
_FLAT = re.compile(r"^(?P<group>.+?)_(?P<patient>patient\d+)_SR_(?P<series>\d+)_(?P<image>IM\d+)\.tiff?$", re.IGNORECASE)
_PATIENT_COLUMNS = ("patient_id", "patient", "patient id", "patientid", "patient_folder", "folder", "name")
_CLASS_COLUMNS = ("class", "label", "diagnosis", "category", "type")


def parse_class(value: str, where: Path) -> int:
    """"covid"/"positive"/"1" -> 1, "normal"/"negative"/"0" -> 0."""
    text = str(value).strip().lower()
    if "covid" in text or text in ("positive", "1", "pcr+"):
        return 1
    if "normal" in text or text in ("negative", "0", "healthy"):
        return 0
    raise DataError(where, f"unknown class value {value!r} (expected covid or normal)")


def _column(fieldnames: list[str], choices: tuple[str, ...]) -> str | None:
    lowered = {name.strip().lower(): name for name in fieldnames}
    return next((lowered[c] for c in choices if c in lowered), None)


#: Name of the raw layout's label file in the dataset root.
DETAILS_CSV = "Patient_details.csv"


def _read_patient_details(root: Path) -> dict[str, tuple[int, int]]:
    """``Patient_details.csv``: keys ``patient<N>`` and ``<group>/patient<N>`` (if a group column) ->
    (label, CSV row number)."""
    path = root / DETAILS_CSV
    if not os.path.lexists(path):
        return {}
    fields, rows = read_csv(path)
    patient_col, class_col = _column(fields, _PATIENT_COLUMNS), _column(fields, _CLASS_COLUMNS)
    if patient_col is None or class_col is None:
        raise DataError(path, f"expected a patient column and a class column, got {fields}")
    group_col = _column(fields, ("group", "folder_group"))
    labels: dict[str, tuple[int, int]] = {}
    for line, row in enumerate(rows, start=2):
        patient = str(row[patient_col]).strip()
        if patient.isdigit():
            patient = f"patient{patient}"
        key = f"{row[group_col].strip()}/{patient}" if group_col else patient
        label = parse_class(row[class_col], path)
        previous = labels.setdefault(key, (label, line))
        if previous[0] != label:
            raise DataError(
                path, f"row {line} gives {key} class {CLASS_NAMES[label]}, row {previous[1]} gives {CLASS_NAMES[previous[0]]}"
            )
    return labels


def _label_for(root: Path, group: str, patient: str, details: dict[str, tuple[int, int]]) -> int:
    for key in (f"{group}/{patient}", patient):
        if key in details:
            return details[key][0]
    if details:
        raise DataError(root / group / patient, f"patient not listed in {DETAILS_CSV}")
    return parse_class(group, root / group)


def _check_listed_patients_exist(
    root: Path, details: dict[str, tuple[int, int]], found: set[str], collector: ScanCollector
) -> None:
    """Every patient of ``Patient_details.csv`` must have a folder: a listed patient without data is
    reported (raised, or skipped with ``skip_bad``), not left out unnoticed."""
    path = root / DETAILS_CSV
    for key, (_, line) in details.items():
        if key not in found:
            where = root / key if "/" in key else root / "<group>" / key
            collector.reject(path, DataError(path, f"row {line} lists {key}, but there is no patient folder {where}"))


def _series_slices(series_dir: Path) -> list[Path]:
    files = scan_folder_files(series_dir)
    if not files:
        raise DataError(series_dir, "empty series folder (no TIFF slices)")
    for path in files:
        if path.suffix.lower() not in TIFF_SUFFIXES:
            raise DataError(path, f"not a TIFF slice (got {path.suffix or 'no suffix'!r})")
    return files


def read_covidctset(root: Path, *, task: str | None, collector: ScanCollector) -> DatasetIndex:
    if (root / "CSV").is_dir():
        return _read_folds(root, collector)
    details = _read_patient_details(root)
    entries = sorted(visible_children(root), key=natural_key)
    for entry in entries:
        if not entry.is_dir() and not entry.is_file():
            collector.reject(entry, "broken symbolic link or special file in the dataset root (expected group folders)")
    groups = [g for g in entries if g.is_dir() and g.name != MASK_FOLDER]
    if not groups:
        raise DataError(root, "no group folders (expected <group>/patient<N>/SR_<k>/IM*.tif or a CSV/ folder of folds)")
    found: set[str] = set()  # Patient_details.csv keys of the patient folders present
    for group in groups:
        patients = sorted(visible_children(group), key=natural_key)
        if not patients:
            collector.reject(group, "empty group folder (no patient folders)")
        for patient_dir in patients:
            found.update((f"{group.name}/{patient_dir.name}", patient_dir.name))
            if not patient_dir.is_dir() or not patient_dir.name.lower().startswith("patient"):
                collector.reject(patient_dir, "unexpected entry in a group folder (expected patient<N> folders)")
                continue
            series_dirs = sorted(visible_children(patient_dir), key=natural_key)
            if not series_dirs:
                collector.reject(patient_dir, "empty patient folder (no SR_<k> series folders)")
            for series_dir in series_dirs:

                def build(series_dir=series_dir, group=group.name, patient=patient_dir.name) -> Scan:
                    if not series_dir.is_dir() or not re.fullmatch(r"SR_\d+", series_dir.name):
                        raise DataError(series_dir, "unexpected entry in a patient folder (expected SR_<k> series folders)")
                    label = _label_for(root, group, patient, details)
                    mask = root / MASK_FOLDER / f"{group}_{patient}_{series_dir.name}_mask.nii.gz"
                    return Scan(
                        dataset="covidctset",
                        patient_id=f"{group}/{patient}",
                        scan_id=series_dir.name,
                        label=label,
                        label_name=CLASS_NAMES[label],
                        paths=tuple(_series_slices(series_dir)),
                        spacing=None,
                        mask_path=mask if mask.exists() else None,
                    )

                collector.add(series_dir, build)
    _check_listed_patients_exist(root, details, found, collector)
    return collector.index("covidctset", root, CLASS_NAMES)


def _fold_csvs(root: Path) -> list[Path]:
    files = sorted((root / "CSV").glob("*.csv"), key=natural_key)
    if not files:
        raise DataError(root / "CSV", "no fold CSV files (expected {train,validation,test}{1..5}.csv)")
    return files


def _read_fold_csv(path: Path) -> list[tuple[str, int]]:
    fields, rows = read_csv(path)
    if "filename" not in fields or "class" not in fields:
        raise DataError(path, f"expected columns filename,class; got {fields}")
    return [(Path(row["filename"]).name, parse_class(row["class"], path)) for row in rows]


def _read_folds(root: Path, collector: ScanCollector) -> DatasetIndex:
    images: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in TIFF_SUFFIXES:
            other = images.setdefault(path.name, path)
            if other != path:
                raise DataError(path, f"the same slice file name is also at {other}: the fold CSVs cannot tell them apart")
    labels: dict[str, tuple[int, Path]] = {}
    for csv_path in _fold_csvs(root):
        for name, label in _read_fold_csv(csv_path):
            previous = labels.setdefault(name, (label, csv_path))
            if previous[0] != label:
                raise DataError(csv_path, f"{name} has class {label}, but {previous[1].name} gives {previous[0]}")
    scans: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name in labels:
        match = _FLAT.match(name)
        if match is None:
            raise DataError(labels[name][1], f"file name {name!r} is not <group>_patient<N>_SR_<k>_IM<n>.tif")
        scans[(f"{match['group']}/{match['patient']}", f"SR_{match['series']}")].append(name)
    for (patient, series), names in sorted(scans.items(), key=lambda kv: natural_key("_".join(kv[0]))):
        location = root / f"{patient.replace('/', '_')}_{series}"

        def build(patient=patient, series=series, names=names) -> Scan:
            missing = [n for n in names if n not in images]
            if missing:
                raise DataError(root / missing[0], f"listed in {labels[missing[0]][1].name} but not found under the root")
            label_set = {labels[n][0] for n in names}
            if len(label_set) != 1:
                raise DataError(images[names[0]], f"slices of one scan have different classes {sorted(label_set)}")
            label = label_set.pop()
            return Scan(
                dataset="covidctset",
                patient_id=patient,
                scan_id=series,
                label=label,
                label_name=CLASS_NAMES[label],
                paths=tuple(sorted((images[n] for n in names), key=natural_key)),
            )

        collector.add(location, build)
    return collector.index("covidctset", root, CLASS_NAMES)


def read_fold_split(index: DatasetIndex, fold: int) -> dict[str, list[Scan]]:
    """The release's fold ``fold`` (1..5) as a split: a scan goes where its slices are listed."""
    where: dict[str, str] = {}
    for subset, key in (("train", "train"), ("validation", "val"), ("test", "test")):
        path = index.root / "CSV" / f"{subset}{fold}.csv"
        if not path.exists():
            raise FileNotFoundError(f"{path}: fold file does not exist")
        for name, _ in _read_fold_csv(path):
            where[name] = key
    split: dict[str, list[Scan]] = {"train": [], "val": [], "test": []}
    for scan in index.scans:
        subsets = {where.get(p.name) for p in scan.paths} - {None}
        if len(subsets) != 1:
            raise DataError(scan.paths[0], f"slices of scan {scan.key} are in fold {fold} subsets {sorted(subsets)}")
        split[subsets.pop()].append(scan)
    return split
