"""A single scan for prediction: a NIfTI file, a DICOM series folder, or a folder of PNG/JPG/TIFF slices."""
from __future__ import annotations

from pathlib import Path

from nni_covid3d.data.io import PNG_SUFFIXES, TIFF_SUFFIXES, check_nifti_header, check_slice_headers, is_nifti
from nni_covid3d.data.records import DataError, Scan, natural_key

__all__ = ["load_single_scan", "UNLABELLED"]

#: ``label`` of a scan whose class is unknown.
UNLABELLED = -1


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def load_single_scan(path: Path | str) -> Scan:
    """Describe one scan on disk as an unlabelled :class:`Scan` (label -1, dataset ``"single"``).

    Raises :class:`DataError` (naming the path) when the path is not a 3D NIfTI file, a DICOM series
    folder or a folder of same-sized slice images.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: scan does not exist")
    name = path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem
    common = dict(dataset="single", patient_id=name, scan_id=name, label=UNLABELLED, label_name="unknown")
    if path.is_file():
        if is_nifti(path):
            return Scan(**common, paths=(path,), spacing=check_nifti_header(path))
        if _is_dicom(path):  # one file of a series: use its folder
            return load_single_scan(path.parent)
        raise DataError(path, "unsupported scan file (expected a .nii/.nii.gz volume, a DICOM series folder or a folder of slices)")
    files = sorted((p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")), key=natural_key)
    if not files:
        raise DataError(path, "empty folder (no slices or DICOM files)")
    dicoms = [p for p in files if _is_dicom(p)]
    if dicoms:
        if len(dicoms) != len(files):
            others = [p.name for p in files if p not in dicoms]
            raise DataError(path, f"DICOM folder also holds non-DICOM files: {others[:5]}")
        return Scan(**common, paths=(path,), spacing=None)
    slices = [p for p in files if p.suffix.lower() in PNG_SUFFIXES + TIFF_SUFFIXES]
    if len(slices) != len(files):
        others = [p.name for p in files if p not in slices]
        raise DataError(path, f"folder holds files that are not slice images: {others[:5]}")
    check_slice_headers(slices)
    return Scan(**common, paths=tuple(slices), spacing=None)
