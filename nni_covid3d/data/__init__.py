"""Chest CT data: dataset readers (CC-CCII, MosMedData, COVID-CTset, single scans), patient-level
splits, MONAI preprocessing with caching, and synthetic phantoms in the real on-disk layouts.

Light names (records, readers, splits, synthetic data) import without torch/MONAI; the
preprocessing names (``Preprocessing``, ``make_dataset``, ``preprocess_single``) load them on first use.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from nni_covid3d.data.readers import DATASETS, load_dataset
from nni_covid3d.data.records import DataError, DatasetIndex, Scan, SkippedScan
from nni_covid3d.data.single import load_single_scan
from nni_covid3d.data.splits import (
    check_patient_disjoint,
    load_split,
    make_patient_split,
    patient_holdout_indices,
    save_split,
    split_summary,
)

_LAZY = {
    "Preprocessing": "nni_covid3d.data.transforms",
    "make_dataset": "nni_covid3d.data.transforms",
    "preprocess_single": "nni_covid3d.data.transforms",
    "ScanDataset": "nni_covid3d.data.transforms",
    "read_scan": "nni_covid3d.data.io",
    "read_mask": "nni_covid3d.data.io",
    "write_synthetic_dataset": "nni_covid3d.data.synthetic",
    "LAYOUTS": "nni_covid3d.data.synthetic",
    "class_names_for": "nni_covid3d.data.classes",
}

__all__ = [
    "DATASETS",
    "DataError",
    "DatasetIndex",
    "Scan",
    "SkippedScan",
    "load_dataset",
    "load_single_scan",
    "make_patient_split",
    "patient_holdout_indices",
    "save_split",
    "load_split",
    "check_patient_disjoint",
    "split_summary",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
