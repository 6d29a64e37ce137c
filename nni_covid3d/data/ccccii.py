"""CC-CCII (raw and Clean-CC-CCII): ``root/{CP,NCP,Normal}/<patient_id>/<scan_id>/<slice>.png|jpg``.

Files in the root (``unzip_filenames.csv``, ``lesions_slices.csv``, notes) are not scans; the two
known CSV files are read when present: labels are cross-checked against ``unzip_filenames.csv`` and
``lesions_slices.csv`` lands in ``DatasetIndex.metadata["lesion_slices"]``.
"""
from __future__ import annotations

import os
from pathlib import Path

from nni_covid3d.data.classes import class_names_for
from nni_covid3d.data.io import PNG_SUFFIXES, read_csv
from nni_covid3d.data.collect import MASK_FOLDER, ScanCollector, visible_children
from nni_covid3d.data.records import DataError, DatasetIndex, Scan, natural_key
from nni_covid3d.data.single import scan_folder_files

__all__ = ["CLASS_NAMES", "FILE_LIST_CSV", "LESION_SLICES_CSV", "read_ccccii", "mask_path_for"]

#: The paper's label order: CP=0, NCP=1, Normal=2.
CLASS_NAMES = class_names_for("ccccii")
#: The release's list of scans with their labels (columns ``label``, ``patient_id``, ``scan_id``).
FILE_LIST_CSV = "unzip_filenames.csv"
#: The release's slices with lesions (column ``imgpath``: ``<class>/<patient>/<scan>/<slice>``).
LESION_SLICES_CSV = "lesions_slices.csv"


def mask_path_for(root: Path, class_name: str, patient_id: str, scan_id: str) -> Path:
    """Where a lesion mask for a CC-CCII scan lives (written by the synthetic generator)."""
    return root / MASK_FOLDER / f"{class_name}_{patient_id}_{scan_id}_mask.nii.gz"


def _scan_slices(scan_dir: Path) -> list[Path]:
    files = scan_folder_files(scan_dir)
    if not files:
        raise DataError(scan_dir, "empty scan folder (no slice images)")
    for path in files:
        if path.suffix.lower() not in PNG_SUFFIXES:
            raise DataError(path, f"not a slice image (expected .png or .jpg, got {path.suffix or 'no suffix'!r})")
    return files


def _read_unzip_filenames(root: Path) -> dict[tuple[str, str], str]:
    """``unzip_filenames.csv``: (patient_id, scan_id) -> class name, to cross-check folder labels."""
    path = root / FILE_LIST_CSV
    if not os.path.lexists(path):
        return {}
    fields, rows = read_csv(path)
    needed = {"label", "patient_id", "scan_id"}
    if not needed <= set(fields):
        raise DataError(path, f"expected columns {sorted(needed)}, got {fields}")
    return {(str(row["patient_id"]), str(row["scan_id"])): row["label"] for row in rows}


def read_lesion_slices(root: Path) -> dict[str, list[str]]:
    """``lesions_slices.csv`` (header ``imgpath``): scan key ``<class>/<pid>/<sid>`` -> slice file names."""
    path = Path(root) / LESION_SLICES_CSV
    out: dict[str, list[str]] = {}
    if not os.path.lexists(path):
        return out
    fields, rows = read_csv(path)
    if "imgpath" not in fields:
        raise DataError(path, f"expected a column 'imgpath', got {fields}")
    for row in rows:
        parts = Path(row["imgpath"]).parts
        if len(parts) != 4:
            raise DataError(path, f"imgpath {row['imgpath']!r} is not <class>/<pid>/<sid>/<slice>")
        out.setdefault("/".join(parts[:3]), []).append(parts[3])
    return out


def read_ccccii(root: Path, *, task: str | None, collector: ScanCollector) -> DatasetIndex:
    """Index CC-CCII. Labels come from the class folder; slices are naturally sorted."""
    listed = _read_unzip_filenames(root)
    for entry in visible_children(root):
        if entry.is_dir() and entry.name not in CLASS_NAMES and entry.name != MASK_FOLDER:
            collector.reject(entry, f"unknown class folder {entry.name!r} (expected {', '.join(CLASS_NAMES)})")
        elif not entry.is_dir() and not entry.is_file():
            collector.reject(entry, "broken symbolic link or special file in the dataset root (expected class folders)")
    for label, class_name in enumerate(CLASS_NAMES):
        class_dir = root / class_name
        if not class_dir.is_dir():
            raise DataError(class_dir, "class folder is missing")
        patients = sorted(visible_children(class_dir), key=natural_key)
        if not patients:
            collector.reject(class_dir, "empty class folder (no patient folders)")
            continue
        for patient_dir in patients:
            if not patient_dir.is_dir():
                collector.reject(patient_dir, "unexpected file in a class folder (expected patient folders)")
                continue
            scan_dirs = sorted(visible_children(patient_dir), key=natural_key)
            if not scan_dirs:
                collector.reject(patient_dir, "empty patient folder (no scan folders)")
            for scan_dir in scan_dirs:
                if not scan_dir.is_dir():
                    collector.reject(scan_dir, "unexpected file in a patient folder (expected scan folders)")
                    continue

                def build(scan_dir=scan_dir, patient_id=patient_dir.name, label=label, class_name=class_name):
                    csv_label = listed.get((patient_id, scan_dir.name))
                    if csv_label is not None and csv_label != class_name:
                        raise DataError(scan_dir, f"folder class {class_name} contradicts unzip_filenames.csv label {csv_label}")
                    mask = mask_path_for(root, class_name, patient_id, scan_dir.name)
                    return Scan(
                        dataset="ccccii",
                        patient_id=patient_id,
                        scan_id=scan_dir.name,
                        label=label,
                        label_name=class_name,
                        paths=tuple(_scan_slices(scan_dir)),
                        spacing=None,
                        mask_path=mask if mask.exists() else None,
                    )

                collector.add(scan_dir, build)
    lesions = _lesion_slices_of_scans(root, collector)
    index = collector.index("ccccii", root, CLASS_NAMES)
    if lesions is not None:
        index.metadata["lesion_slices"] = lesions
    return index


def _lesion_slices_of_scans(root: Path, collector: ScanCollector) -> dict[str, list[str]] | None:
    """``lesions_slices.csv`` keyed by :attr:`Scan.key` for the collected scans (``None`` without the file).

    Every slice it lists for a scan present must be one of that scan's files; scans absent from the
    copy (e.g. left out of Clean-CC-CCII) are passed over.
    """
    lesion_slices = read_lesion_slices(root)  # keyed <class>/<pid>/<sid>
    if not lesion_slices:
        return None
    csv_path = root / LESION_SLICES_CSV
    lesions = {}
    for scan in collector.scans:
        listed = lesion_slices.get(f"{scan.label_name}/{scan.key}")
        if listed is None:
            continue
        present = {path.name for path in scan.paths}
        missing = [name for name in listed if name not in present]
        if missing:
            problem = f"lists slice {scan.label_name}/{scan.key}/{missing[0]}, which that scan's folder does not hold"
            collector.reject(csv_path, DataError(csv_path, problem))
            continue
        lesions[scan.key] = listed
    return lesions
