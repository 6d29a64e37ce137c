"""MosMedData (COVID19_1110): ``root/studies/CT-{0..4}/study_NNNN.nii.gz``, ``root/masks/``,
optional ``root/dataset_registry.xlsx``.

One study per patient; the study id is both patient and scan id. Labels: ``task="binary"`` (the
paper's: CT-0 -> Normal, CT-1..4 -> NCP) or ``task="severity"`` (CT-0..CT-4).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from nni_covid3d.data.classes import class_names_for
from nni_covid3d.data.io import describe_error, is_nifti, require_regular_file
from nni_covid3d.data.collect import ScanCollector, visible_children
from nni_covid3d.data.records import DataError, DatasetIndex, Scan, natural_key

__all__ = ["read_mosmed", "CATEGORIES", "REGISTRY_XLSX", "study_path", "mask_path"]

CATEGORIES = [f"CT-{k}" for k in range(5)]
#: The release's study list (optional; read when present).
REGISTRY_XLSX = "dataset_registry.xlsx"
_STUDIES = "studies"
_MASKS = "masks"


def study_path(root: Path, category: str, study_id: str) -> Path:
    """Where study ``study_id`` of grade folder ``category`` (``CT-0`` ... ``CT-4``) lives."""
    return Path(root) / _STUDIES / category / f"{study_id}.nii.gz"


def mask_path(root: Path, study_id: str) -> Path:
    """Where the lesion mask of ``study_id`` lives (the release has masks for 50 CT-1 studies)."""
    return Path(root) / _MASKS / f"{study_id}_mask.nii.gz"
_STUDY = re.compile(r"^(study_\d+)\.nii(\.gz)?$")


def _label(category: str, task: str) -> int:
    grade = CATEGORIES.index(category)
    return grade if task == "severity" else int(grade > 0)


def _read_registry(root: Path) -> dict[str, str]:
    """``dataset_registry.xlsx``: study file name -> category, to cross-check the folders."""
    path = root / REGISTRY_XLSX
    if not os.path.lexists(path):
        return {}
    import pandas as pd

    try:
        table = pd.read_excel(require_regular_file(path))
    except DataError:
        raise
    except Exception as error:
        raise DataError(path, f"cannot read the registry ({describe_error(error)})") from None
    needed = {"category", "study_file"}
    if not needed <= set(table.columns):
        raise DataError(path, f"expected columns {sorted(needed)}, got {list(table.columns)}")
    return {Path(str(f)).name: str(c) for f, c in zip(table["study_file"], table["category"])}


def read_mosmed(root: Path, *, task: str | None, collector: ScanCollector) -> DatasetIndex:
    task = task or "binary"
    class_names = class_names_for("mosmed", task)
    studies = root / _STUDIES
    if not studies.is_dir():
        raise DataError(studies, "missing the studies/ folder (expected studies/CT-0 ... CT-4)")
    registry = _read_registry(root)
    for entry in visible_children(studies):
        if entry.name not in CATEGORIES:
            collector.reject(entry, f"unknown category folder {entry.name!r} (expected {', '.join(CATEGORIES)})")
    found_any = False
    for category in CATEGORIES:
        folder = studies / category
        if os.path.lexists(folder) and not folder.is_dir():
            collector.reject(folder, "not a folder (a file, broken symbolic link or special file)")
            continue
        if not folder.is_dir():
            continue  # CT-4 has only 2 studies; a subset of categories is a valid copy
        files = sorted(visible_children(folder), key=natural_key)
        if not files:
            collector.reject(folder, "empty category folder (no study files)")
            continue
        found_any = True
        for path in files:
            match = _STUDY.match(path.name)

            def build(path=path, match=match, category=category) -> Scan:
                if os.path.isdir(path) or not is_nifti(path):
                    raise DataError(path, "not a NIfTI study file (expected study_NNNN.nii.gz)")
                require_regular_file(path)
                if match is None:
                    raise DataError(path, "unexpected file name (expected study_NNNN.nii.gz)")
                listed = registry.get(path.name)
                if listed is not None and listed != category:
                    raise DataError(path, f"in folder {category} but dataset_registry.xlsx says {listed}")
                study_id = match.group(1)
                mask = mask_path(root, study_id)
                label = _label(category, task)
                return Scan(
                    dataset="mosmed",
                    patient_id=study_id,
                    scan_id=study_id,
                    label=label,
                    label_name=class_names[label],
                    paths=(path,),
                    spacing=None,  # filled from the header by the checks
                    mask_path=mask if mask.exists() else None,
                )

            collector.add(path, build)
    if not found_any:
        raise DataError(studies, "no study files found in CT-0 ... CT-4")
    return collector.index("mosmed", root, class_names, task=task)
