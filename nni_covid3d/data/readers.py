"""``load_dataset``: index a dataset on disk by name, with checks of every scan.

:data:`READERS` is the registry of dataset readers; :data:`DATASETS` (the canonical names every
command accepts) is derived from it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from nni_covid3d.data.ccccii import read_ccccii
from nni_covid3d.data.collect import MASK_FOLDER, ScanCollector, require_root
from nni_covid3d.data.covidctset import read_covidctset
from nni_covid3d.data.mosmed import read_mosmed
from nni_covid3d.data.records import DatasetIndex

__all__ = ["DATASETS", "MASK_FOLDER", "READERS", "load_dataset"]

#: Dataset name -> reader ``(root, *, task, collector) -> DatasetIndex``.
READERS: dict[str, Callable[..., DatasetIndex]] = {
    "ccccii": read_ccccii,
    "mosmed": read_mosmed,
    "covidctset": read_covidctset,
}
#: Canonical dataset names.
DATASETS = tuple(READERS)


def load_dataset(
    name: str,
    root: Path | str,
    *,
    task: str | None = None,
    skip_bad: bool = False,
    check: str = "header",
) -> DatasetIndex:
    """Index a dataset on disk.

    Args:
        name: ``"ccccii"``, ``"mosmed"`` or ``"covidctset"``.
        root: the dataset's root folder, in the layout of its public release (see DATASETS.md).
        task: MosMedData only: ``"binary"`` (default, CT-0 normal vs CT-1..4 COVID) or ``"severity"``.
        skip_bad: leave out bad scans instead of raising; every skipped scan is listed in ``.skipped``.
        check: ``"none"``, ``"header"`` (default: every file opens, slice sizes agree, NIfTI is 3D) or
            ``"full"`` (decode every scan: also finds truncated files and NaN voxels).
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    if task is not None and key != "mosmed":
        raise ValueError(f"task={task!r} only applies to the mosmed dataset")
    return READERS[key](require_root(root), task=task, collector=ScanCollector(check, skip_bad))
