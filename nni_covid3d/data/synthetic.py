"""Write synthetic phantom datasets in the real on-disk layouts of CC-CCII, MosMedData and COVID-CTset.

Two phantom families (:mod:`nni_covid3d.data.phantom`): ``"shape"`` (the default), whose classes
differ only in the 3D shape and place of abnormal tissue, every scan carrying the same distribution
of ground-glass and consolidation density; and ``"intensity"``, whose lesions add density to
diseased scans only, so the class also shows in the intensity histogram. Each layout gets lesion masks as NIfTI files (CC-CCII / COVID-CTset: ``<root>/lesion_masks/``,
MosMedData: ``<root>/masks/study_NNNN_mask.nii.gz`` as in the release), aligned voxel for voxel with
the volume the readers load. Output is deterministic for a given seed.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

from nni_covid3d.data.ccccii import CLASS_NAMES, FILE_LIST_CSV, LESION_SLICES_CSV, mask_path_for
from nni_covid3d.data.covidctset import DETAILS_CSV
from nni_covid3d.data.io import TIFF_HU_OFFSET
from nni_covid3d.data.mosmed import CATEGORIES, REGISTRY_XLSX, mask_path, study_path
from nni_covid3d.data.phantom import MAX_BUDGET, draw_budget, make_phantom, make_shape_phantom, random_anatomy
from nni_covid3d.data.readers import MASK_FOLDER

__all__ = ["LAYOUTS", "PHANTOMS", "write_synthetic_dataset", "PNG_WINDOW", "save_axial_nifti", "write_dicom_series"]

LAYOUTS = ("ccccii", "mosmed", "covidctset")
#: Phantom families: classes told by shape and place only, or also by the intensity histogram.
PHANTOMS = ("shape", "intensity")
#: The lung display window (level -600, width 1500) used to write 8-bit PNG slices from HU (jittered per scan).
PNG_WINDOW = (-1350.0, 150.0)
#: Default slice-count ranges per layout (real data: CC-CCII 9-457, MosMed 33-46, COVID-CTset 1-78 selected).
DEFAULT_SLICES = {"ccccii": (24, 64), "mosmed": (33, 46), "covidctset": (16, 40)}
#: Default ``involvement`` of CC-CCII and COVID-CTset phantoms: small, early-stage lesions, as most of
#: the releases' scans (MosMedData follows its CT-k grades instead).
DEFAULT_INVOLVEMENT = (0.01, 0.15)
#: MosMed CT-k involved-lung fraction ranges.
SEVERITY_RANGES = [(0.0, 0.0), (0.03, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 0.9)]
#: MosMed shape phantoms: abnormal tissue (fraction of the lungs) of every scan, whatever its grade;
#: the grade sets how far the lesions spread, filling them patchily where the tissue is short.
MOSMED_BUDGET = (0.10, 0.30)
#: Patient numbers of a cohort written with ``seed`` start at ``seed * PATIENTS_PER_SEED``, so cohorts of
#: different seeds (a training root and an independent test cohort) never share a patient id.
PATIENTS_PER_SEED = 100_000
#: Shape-phantom pattern per class name of each layout.
PATTERN_OF = {"CP": "pneumonia", "NCP": "covid", "Normal": "normal", "covid": "covid", "normal": "normal"}
_INTENSITY_LESION = {"covid": "ggo", "pneumonia": "consolidation", "normal": "none"}


def _hu_to_gray8(volume: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """8-bit slices in the lung window; with ``rng``, level and width vary per scan (+-80 / +-200 HU),
    as the windows of the release's hospitals do."""
    lo, hi = PNG_WINDOW
    if rng is not None:
        level, width = (lo + hi) / 2 + rng.uniform(-80, 80), (hi - lo) + rng.uniform(-200, 200)
        lo, hi = level - width / 2, level + width / 2
    return np.clip(np.rint((volume.astype(np.float32) - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)


def save_axial_nifti(path: Path, volume: np.ndarray, spacing: tuple[float, float, float], *, flip_xy: bool = False) -> None:
    """Write ``[D, H, W]`` axial data (rows posterior-going, columns towards patient-left) as NIfTI.

    The voxel axes are stored as (x, y, z) with an affine that MONAI/nibabel reorient back to exactly
    ``volume``. ``flip_xy`` stores the in-plane axes reversed with a RAS-positive affine instead (the
    same image, a different but equally valid encoding).
    """
    import nibabel as nib

    z, y, x = spacing
    data = np.ascontiguousarray(volume.transpose(2, 1, 0))  # (x, y, z)
    if flip_xy:
        data = np.ascontiguousarray(data[::-1, ::-1, :])
        affine = np.diag([x, y, z, 1.0])
    else:
        affine = np.diag([-x, -y, z, 1.0])
    affine[:3, 3] = [-0.5 * x * data.shape[0], -0.5 * y * data.shape[1], -100.0]
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))


def _class_sequence(n: int, pattern: Sequence[int], rng: np.random.Generator) -> list[int]:
    """Labels for n patients: repeat ``pattern`` (so every class appears early), then shuffle."""
    labels = [pattern[i % len(pattern)] for i in range(n)]
    rng.shuffle(labels)
    return labels


def _scan_phantom(rng, anatomy, *, phantom, pattern, size, slices, spacing_z, involvement, extent=None):
    """One scan of class ``pattern``. ``involvement``: intensity phantoms, the lesion extent range of a
    diseased scan; shape phantoms, the abnormal-tissue range of every scan (``extent``: a MosMed grade's range)."""
    if phantom == "intensity":
        lesion_extent = float(rng.uniform(*involvement)) if pattern != "normal" else 0.0
        n_slices = int(rng.integers(slices[0], slices[1] + 1))
        pixel = float(rng.uniform(0.6, 0.9)) * 512 / size
        z = float(rng.uniform(*spacing_z))
        return make_phantom(rng, anatomy, size=size, n_slices=n_slices, lesion=_INTENSITY_LESION[pattern],
                            involvement=lesion_extent, spacing=(z, pixel, pixel))
    n_slices = int(rng.integers(slices[0], slices[1] + 1))
    pixel = float(rng.uniform(0.65, 0.8)) * 512 / size  # field of view 333-410 mm
    z = float(rng.uniform(*spacing_z))
    budget = draw_budget(rng, involvement)
    lesion_extent = float(rng.uniform(*extent)) if extent is not None else None
    return make_shape_phantom(rng, anatomy, size=size, n_slices=n_slices, pattern=pattern, budget=budget,
                              extent=lesion_extent, spacing=(z, pixel, pixel))


def write_synthetic_dataset(
    layout: str,
    out_dir: Path | str,
    *,
    n_patients: int,
    seed: int,
    size: int = 512,
    slices: tuple[int, int] | None = None,
    variant: str = "raw",
    involvement: tuple[float, float] | None = None,
    phantom: str = "shape",
) -> Path:
    """Write a phantom dataset in a real layout; returns the dataset root.

    Args:
        layout: ``"ccccii"``, ``"mosmed"`` or ``"covidctset"``.
        out_dir: the dataset root to create (may exist, should be empty).
        n_patients: number of patients (classes assigned in rotation, so small counts cover all classes).
        seed: everything is a deterministic function of the seed; patients are numbered from
            ``seed * PATIENTS_PER_SEED``, so cohorts of different seeds share no patient id.
        size: in-plane size H = W (512 as the real data; 64-96 for quick runs). Shape phantoms hide
            the class from the intensity histogram only when read at this size (no resampling).
        slices: (min, max) slices per scan; the layout's default when ``None``.
        variant: COVID-CTset only: ``"raw"`` (patient/series folders) or ``"folds"`` (flat folder of
            selected slices plus ``CSV/{train,validation,test}{1..5}.csv``).
        involvement: CC-CCII and COVID-CTset only, (min, max) fraction of the lungs: shape phantoms,
            the abnormal-density tissue of every scan, whatever its class (a diseased scan's lesions
            hold most of it); intensity phantoms, a diseased scan's lesions. :data:`DEFAULT_INVOLVEMENT`
            when ``None``; larger is easier to classify.
        phantom: ``"shape"`` or ``"intensity"`` (:data:`PHANTOMS`, module docstring).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    if not 1 <= n_patients <= PATIENTS_PER_SEED:
        raise ValueError(f"n_patients must lie in [1, {PATIENTS_PER_SEED}], got {n_patients}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative (it sets the patient ids), got {seed}")
    if phantom not in PHANTOMS:
        raise ValueError(f"unknown phantom {phantom!r}; expected one of {PHANTOMS}")
    if variant != "raw" and layout != "covidctset":
        raise ValueError("variant only applies to the covidctset layout")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    slices = tuple(slices) if slices else DEFAULT_SLICES[layout]
    if slices[0] < 1 or slices[1] < slices[0]:
        raise ValueError(f"slices must be (min, max) with 1 <= min <= max, got {slices}")
    if involvement is not None:
        if layout == "mosmed":
            raise ValueError("involvement does not apply to the mosmed layout: its lesion extent follows the CT-k grades")
        if not 0.0 < involvement[0] <= involvement[1] <= 1.0:
            raise ValueError(f"involvement must be (min, max) with 0 < min <= max <= 1, got {tuple(involvement)}")
        if phantom == "shape" and involvement[1] > MAX_BUDGET:
            raise ValueError(f"shape phantoms carry at most {MAX_BUDGET} of the lungs as abnormal tissue, got {tuple(involvement)}")
    rng = np.random.default_rng(seed)
    writer = {"ccccii": _write_ccccii, "mosmed": _write_mosmed, "covidctset": _write_covidctset}[layout]
    kwargs = {"variant": variant, "phantom": phantom} if layout == "covidctset" else {"phantom": phantom}
    if layout != "mosmed":
        kwargs["involvement"] = tuple(involvement) if involvement is not None else DEFAULT_INVOLVEMENT
    writer(out, rng, n_patients=n_patients, first=seed * PATIENTS_PER_SEED, size=size, slices=slices, **kwargs)
    return out


# --------------------------------------------------------------------------------------- CC-CCII
def _write_ccccii(root: Path, rng, *, n_patients, first, size, slices, involvement, phantom) -> None:
    from PIL import Image

    labels = _class_sequence(n_patients, [0, 1, 2], rng)
    unzip_rows, lesion_rows = [], []
    for index, label in enumerate(labels):
        class_name = CLASS_NAMES[label]
        number = first + index
        patient_id = str(1000 + number)  # integer ids, unique across classes
        anatomy = random_anatomy(rng)
        n_scans = int(rng.choice([1, 1, 2, 3]))
        for scan_index in range(n_scans):
            scan_id = str(2000 + 10 * number + scan_index)
            scan = _scan_phantom(rng, anatomy, phantom=phantom, pattern=PATTERN_OF[class_name], size=size, slices=slices,
                                 spacing_z=(1.0, 5.0), involvement=involvement)
            scan_dir = root / class_name / patient_id / scan_id
            scan_dir.mkdir(parents=True, exist_ok=True)
            gray = _hu_to_gray8(scan.volume, rng)
            use_jpg = rng.uniform() < 0.15
            padded = rng.uniform() < 0.5  # "0007.png" (Clean-CC-CCII) or "7.png" (needs natural sort)
            for z in range(gray.shape[0]):
                name = f"{z:04d}" if padded else str(z)
                if use_jpg:
                    Image.fromarray(gray[z]).save(scan_dir / f"{name}.jpg", quality=95)
                else:
                    Image.fromarray(gray[z]).save(scan_dir / f"{name}.png")
                if scan.mask[z].any():
                    lesion_rows.append(f"{class_name}/{patient_id}/{scan_id}/{name}.{'jpg' if use_jpg else 'png'}")
            unzip_rows.append((f"{class_name}-{patient_id}.zip", class_name, patient_id, scan_id, gray.shape[0]))
            if class_name != "Normal":
                save_axial_nifti(mask_path_for(root, class_name, patient_id, scan_id), scan.mask, scan.spacing)
    with (root / FILE_LIST_CSV).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["zip_file", "label", "patient_id", "scan_id", "n_slice"])
        writer.writerows(unzip_rows)
    with (root / LESION_SLICES_CSV).open("w", newline="") as handle:
        handle.write("imgpath\n" + "".join(f"{row}\n" for row in lesion_rows))


# ------------------------------------------------------------------------------------ MosMedData
def _write_mosmed(root: Path, rng, *, n_patients, first, size, slices, phantom) -> None:
    grades = _class_sequence(n_patients, [0, 1, 2, 0, 3, 1, 0, 4, 1, 2], rng)
    registry = []
    for index, grade in enumerate(grades):
        study_id = f"study_{first + index + 1:04d}"
        anatomy = random_anatomy(rng)
        pattern = "covid" if grade else "normal"
        if phantom == "intensity":
            scan = _scan_phantom(rng, anatomy, phantom=phantom, pattern=pattern, size=size, slices=slices,
                                 spacing_z=(7.5, 10.0), involvement=SEVERITY_RANGES[grade])
        else:
            scan = _scan_phantom(rng, anatomy, phantom=phantom, pattern=pattern, size=size, slices=slices,
                                 spacing_z=(7.5, 10.0), involvement=MOSMED_BUDGET,
                                 extent=SEVERITY_RANGES[grade] if grade else None)
        study_file = study_path(root, CATEGORIES[grade], study_id)
        save_axial_nifti(study_file, scan.volume.astype(np.int16), scan.spacing, flip_xy=True)
        mask_file = ""
        if grade:
            mask = mask_path(root, study_id)
            save_axial_nifti(mask, scan.mask, scan.spacing, flip_xy=True)
            mask_file = str(mask.relative_to(root))
        registry.append(
            {"study_id": first + index + 1, "category": CATEGORIES[grade], "study_file": str(study_file.relative_to(root)), "mask_file": mask_file}
        )
    import pandas as pd

    pd.DataFrame(registry).to_excel(root / REGISTRY_XLSX, index=False)


# ----------------------------------------------------------------------------------- COVID-CTset
def _write_tiff(path: Path, hu_slice: np.ndarray) -> None:
    import tifffile

    tifffile.imwrite(path, np.clip(hu_slice.astype(np.int32) + TIFF_HU_OFFSET, 0, 65535).astype(np.uint16))


def _write_covidctset(root: Path, rng, *, n_patients, first, size, slices, variant, involvement, phantom) -> None:
    if variant not in ("raw", "folds"):
        raise ValueError(f"variant must be 'raw' or 'folds', got {variant!r}")
    labels = _class_sequence(n_patients, [1, 0, 0, 1, 0], rng)  # 1 = covid (~40%)
    details = []
    fold_files: list[tuple[str, str]] = []
    image_dir = root / "images"
    for index, label in enumerate(labels):
        class_name = "covid" if label else "normal"
        group = f"{class_name}{1 + index % 2}"
        patient = f"patient{first + index + 1}"
        anatomy = random_anatomy(rng)
        series = [2] + ([3, 4][: int(rng.integers(0, 3))] if label else [3][: int(rng.integers(0, 2))])
        details.append({"patient_id": patient, "group": group, "class": class_name, "n_series": len(series)})
        for k in series:
            scan = _scan_phantom(rng, anatomy, phantom=phantom, pattern=PATTERN_OF[class_name], size=size, slices=slices,
                                 spacing_z=(1.0, 5.0), involvement=involvement)
            name = f"{group}_{patient}_SR_{k}"
            if variant == "raw":
                series_dir = root / group / patient / f"SR_{k}"
                series_dir.mkdir(parents=True, exist_ok=True)
                for z in range(scan.volume.shape[0]):
                    _write_tiff(series_dir / f"IM{z + 1:05d}.tif", scan.volume[z])
                if label:
                    save_axial_nifti(root / MASK_FOLDER / f"{name}_mask.nii.gz", scan.mask, scan.spacing)
            else:
                image_dir.mkdir(parents=True, exist_ok=True)
                lung_slices = np.flatnonzero(scan.lungs.any(axis=(1, 2)))  # the release keeps selected slices
                for z in lung_slices:
                    file_name = f"{name}_IM{z + 1:05d}.tif"
                    _write_tiff(image_dir / file_name, scan.volume[z])
                    fold_files.append((file_name, class_name, f"{group}/{patient}"))
    if variant == "raw":
        with (root / DETAILS_CSV).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["patient_id", "group", "class", "n_series"])
            writer.writeheader()
            writer.writerows(details)
        return
    _write_fold_csvs(root, fold_files, rng)


def _write_fold_csvs(root: Path, files: list[tuple[str, str, str]], rng) -> None:
    """Five patient-level folds: each fold's test = one fifth of the patients, validation = another."""
    patient_class = {p: c for _, c, p in files}
    part: dict[str, int] = {}
    for class_name in sorted(set(patient_class.values())):  # stratified: rotate each class over the parts
        patients = sorted(p for p, c in patient_class.items() if c == class_name)
        for rank, i in enumerate(rng.permutation(len(patients))):
            part[patients[i]] = rank % 5
    csv_dir = root / "CSV"
    csv_dir.mkdir(parents=True, exist_ok=True)
    for fold in range(1, 6):
        test_part, val_part = fold - 1, fold % 5
        rows = {"train": [], "validation": [], "test": []}
        for file_name, class_name, patient in files:
            subset = "test" if part[patient] == test_part else "validation" if part[patient] == val_part else "train"
            rows[subset].append((file_name, class_name))
        for subset, subset_rows in rows.items():
            with (csv_dir / f"{subset}{fold}.csv").open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["filename", "class"])
                writer.writerows(subset_rows)


def write_dicom_series(folder: Path | str, volume: np.ndarray, spacing: tuple[float, float, float], *, patient_id: str = "PHANTOM") -> Path:
    """Write an int16 HU volume ``[D, H, W]`` (slice 0 inferior) as a CT DICOM series, one file per slice.

    Pixels are stored as unsigned 16-bit with RescaleIntercept -1024; the orientation is axial
    (ImageOrientationPatient 1\\0\\0\\0\\1\\0) so a reader recovers ``volume`` exactly.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    z, y, x = spacing
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    for index, hu_slice in enumerate(volume):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"IM{index + 1:04d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.PatientName = "CT", patient_id, patient_id
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.InstanceNumber = index + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(index * z)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [float(y), float(x)]
        ds.SliceThickness = float(z)
        ds.Rows, ds.Columns = hu_slice.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = -float(TIFF_HU_OFFSET), 1.0
        ds.PixelData = np.clip(hu_slice.astype(np.int32) + TIFF_HU_OFFSET, 0, 65535).astype(np.uint16).tobytes()
        ds.save_as(folder / f"IM{index + 1:04d}.dcm", enforce_file_format=True)
    return folder
