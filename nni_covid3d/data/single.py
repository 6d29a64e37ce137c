"""A single scan for prediction: a NIfTI file, a DICOM series folder, or a folder of PNG/JPG/TIFF slices."""
from __future__ import annotations

import os
from pathlib import Path

from nni_covid3d.data.io import (
    PNG_SUFFIXES,
    TIFF_SUFFIXES,
    check_dicom_series,
    check_nifti_header,
    check_slice_headers,
    is_dicom_file,
    is_nifti,
    require_regular_file,
)
from nni_covid3d.data.records import DataError, Scan, natural_key

__all__ = ["load_single_scan", "scan_folder_files", "UNLABELLED"]

#: ``label`` of a scan whose class is unknown.
UNLABELLED = -1


def scan_folder_files(folder: Path) -> list[Path]:
    """The visible files of one scan's folder, naturally sorted.

    A sub-folder, broken or looping symbolic link, pipe or device raises :class:`DataError` naming it:
    a scan folder holds slice images or DICOM files only, and none of them is left out unnoticed.
    """
    files = []
    for path in sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=natural_key):
        if os.path.isdir(path):
            raise DataError(path, "unexpected folder inside a scan folder (expected slice images or DICOM files)")
        files.append(require_regular_file(path))
    return files


def load_single_scan(path: Path | str) -> Scan:
    """Describe one scan on disk as an unlabelled :class:`Scan` (label -1, dataset ``"single"``).

    Raises :class:`DataError` (naming the file) when the path is not a 3D NIfTI file, a DICOM series
    folder (one CT series, same-sized slices) or a folder of same-sized slice images.
    """
    path = Path(path).expanduser()
    if not path.exists() and not path.is_symlink():
        raise FileNotFoundError(f"{path}: scan does not exist")
    name = path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem
    common = dict(dataset="single", patient_id=name, scan_id=name, label=UNLABELLED, label_name="unknown")
    if not path.is_dir():
        require_regular_file(path)
        if is_nifti(path):
            return Scan(**common, paths=(path,), spacing=check_nifti_header(path))
        if is_dicom_file(path):  # one file of a series: use its folder
            return load_single_scan(path.parent)
        raise DataError(path, "unsupported scan file (expected a .nii/.nii.gz volume, a DICOM series folder or a folder of slices)")
    files = scan_folder_files(path)
    if not files:
        raise DataError(path, "empty folder (no slices or DICOM files)")
    dicoms = [p for p in files if is_dicom_file(p)]
    if dicoms:
        others = [p for p in files if p not in dicoms]
        if others:
            raise DataError(others[0], f"not a DICOM file, in a DICOM series folder with {len(dicoms)} DICOM file(s)")
        check_dicom_series(path)
        return Scan(**common, paths=(path,), spacing=None)
    others = [p for p in files if p.suffix.lower() not in PNG_SUFFIXES + TIFF_SUFFIXES]
    if others:
        raise DataError(others[0], "not a slice image (expected .png, .jpg or .tif slices in a scan folder)")
    check_slice_headers(files)
    return Scan(**common, paths=tuple(files), spacing=None)
