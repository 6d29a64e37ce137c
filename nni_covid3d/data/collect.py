"""What every dataset reader shares: the scan collector (checks at index time, skipping bad scans
when asked), the root check and the folder listing."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from nni_covid3d.data.io import check_slice_headers, is_nifti, nifti_geometry, read_scan
from nni_covid3d.data.records import DataError, DatasetIndex, Scan, SkippedScan

__all__ = ["CHECK_LEVELS", "MASK_FOLDER", "ScanCollector", "check_scan", "require_root", "visible_children"]

#: Readers' depth of checking at index time: "none" lists files only; "header" opens every file's
#: header (image size, NIfTI shape) without decoding pixels; "full" decodes every scan.
CHECK_LEVELS = ("none", "header", "full")

#: Folder written beside a slice-stack layout by the synthetic generator for lesion masks; readers skip it.
MASK_FOLDER = "lesion_masks"


def check_scan(scan: Scan, level: str) -> tuple[Scan, int | None]:
    """Check a scan's files at the given level; return the scan (``spacing`` filled in from a NIfTI
    header) and its slice count when known without decoding."""
    n_slices = scan.num_slices
    if level == "none":
        return scan, n_slices
    if len(scan.paths) == 1 and is_nifti(scan.paths[0]):
        spacing, shape = nifti_geometry(scan.paths[0])
        n_slices = shape[0]
        if scan.spacing is None:
            scan = dataclasses.replace(scan, spacing=spacing)
    elif not (len(scan.paths) == 1 and scan.paths[0].is_dir()):
        check_slice_headers(list(scan.paths))
    if level == "full":
        n_slices = read_scan(scan.paths)[0].shape[0]
    return scan, n_slices


class ScanCollector:
    """Collects scans, turning per-scan :class:`DataError` into skipped entries when ``skip_bad``."""

    def __init__(self, check: str, skip_bad: bool):
        if check not in CHECK_LEVELS:
            raise ValueError(f"check must be one of {CHECK_LEVELS}, got {check!r}")
        self.check = check
        self.skip_bad = skip_bad
        self.scans: list[Scan] = []
        self.skipped: list[SkippedScan] = []
        self.slices: dict[str, int] = {}  # scan key -> slice count, where known

    def add(self, location: Path, build: Callable[[], Scan]) -> None:
        """Build a scan (which may raise DataError), check it and keep it, or skip it."""
        try:
            scan, n_slices = check_scan(build(), self.check)
        except DataError as error:
            self.reject(location, error)
            return
        self.scans.append(scan)
        if n_slices is not None:
            self.slices[scan.key] = n_slices

    def index(self, name: str, root: Path, class_names: list[str], task: str | None = None) -> DatasetIndex:
        """The :class:`DatasetIndex` of the collected scans."""
        return DatasetIndex(name, root, self.scans, list(class_names), self.skipped, task=task, metadata={"slices": self.slices})

    def reject(self, location: Path, problem: DataError | str) -> None:
        """Record a bad scan or folder: raise, or list it as skipped when ``skip_bad``."""
        error = problem if isinstance(problem, DataError) else DataError(location, problem)
        if not self.skip_bad:
            raise error
        self.skipped.append(SkippedScan(location, str(error)))


def require_root(root: Path | str) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"{root}: dataset root does not exist")
    if not root.is_dir():
        raise DataError(root, "dataset root is not a folder")
    return root


def visible_children(folder: Path) -> list[Path]:
    """Entries of a folder without hidden files (``.DS_Store``, ``._*``)."""
    return [p for p in folder.iterdir() if not p.name.startswith(".")]
