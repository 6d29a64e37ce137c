"""Reading scans from disk: header checks for the readers and full decoding into axial volumes.

Every decoded volume is a float32 array ``[D, H, W]`` with axial slices along D, rows running
anterior -> posterior and columns patient-right -> patient-left (radiological display), plus an
intensity *kind*: ``"hu"`` (Hounsfield units: NIfTI, DICOM, 16-bit TIFF) or ``"gray8"`` (8-bit PNG/JPG
already windowed by the data provider, values 0-255).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np

from nni_covid3d.data.records import DataError

__all__ = [
    "PNG_SUFFIXES",
    "TIFF_SUFFIXES",
    "NIFTI_SUFFIXES",
    "TIFF_HU_OFFSET",
    "is_nifti",
    "check_slice_header",
    "check_slice_headers",
    "check_nifti_header",
    "nifti_geometry",
    "read_slice",
    "read_scan",
    "read_mask",
]

PNG_SUFFIXES = (".png", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: COVID-CTset stores HU + 1024 as unsigned 16-bit.
TIFF_HU_OFFSET = 1024
#: Sample types a TIFF slice may have: 16-bit integers (an 8-bit or float slice is another encoding).
TIFF_DTYPES = ("uint16", "int16")
#: The orientation MONAI's ``Orientation`` gives volumes: array axes (D, H, W) run towards
#: Superior, Posterior and patient-Left, i.e. axial slices with radiological in-plane display.
AXIAL_AXCODES = "SPL"
#: PIL modes of 8-bit PNG/JPG slices (colour ones are converted to gray).
_EIGHT_BIT_MODES = ("L", "LA", "P", "RGB", "RGBA")


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """A release CSV file as (column names, rows); a byte-order mark is ignored.

    A file that is not UTF-8 text or not a readable CSV raises :class:`DataError` naming it.
    """
    import csv
    import io

    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(path, f"not a UTF-8 text CSV file (byte {error.start}: {error.reason})") from None
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
    except csv.Error as error:
        raise DataError(path, f"not a readable CSV file: {error}") from None
    return list(reader.fieldnames or []), rows


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def check_slice_header(path: Path) -> tuple[int, int]:
    """Open a PNG/JPG/TIFF slice without decoding its pixels; return (height, width).

    Raises :class:`DataError` for a non-image file or one that is not a single 2D grayscale image.
    """
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        import tifffile

        try:
            with tifffile.TiffFile(path) as tif:
                shape, dtype = tif.pages[0].shape, tif.pages[0].dtype
        except Exception as error:  # tifffile raises several types for garbage input
            raise DataError(path, f"not a readable TIFF image ({error})") from None
        if len(shape) != 2:
            raise DataError(path, f"expected a 2D grayscale slice, got an image of shape {tuple(shape)}")
        _check_tiff_dtype(path, dtype)
        return int(shape[0]), int(shape[1])
    if suffix in PNG_SUFFIXES:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                width, height = image.size
        except (UnidentifiedImageError, OSError) as error:
            raise DataError(path, f"not a readable image ({error})") from None
        return height, width
    raise DataError(path, f"unsupported slice file type {suffix!r} (expected PNG, JPG or TIFF)")


def _check_tiff_dtype(path: Path, dtype: np.dtype | None) -> None:
    if dtype is None or np.dtype(dtype).name not in TIFF_DTYPES:
        raise DataError(path, f"expected a 16-bit integer TIFF slice (HU + {TIFF_HU_OFFSET}), got samples of type {dtype}")


def check_slice_headers(paths: Sequence[Path]) -> tuple[int, int]:
    """Check every slice of a stack opens and all share one size; return that (height, width)."""
    if not paths:
        raise DataError(Path("."), "empty slice list")
    first = check_slice_header(paths[0])
    for path in paths[1:]:
        size = check_slice_header(path)
        if size != first:
            raise DataError(
                path, f"slice size {size[0]}x{size[1]} differs from {first[0]}x{first[1]} of {paths[0].name} in the same scan"
            )
    return first


def nifti_geometry(path: Path) -> tuple[tuple[float, float, float], tuple[int, int, int]]:
    """Read a NIfTI header; require a 3D volume; return its spacing (z, y, x) in mm and its shape
    (D, H, W), both in the axial orientation :func:`read_scan` gives."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
    except Exception as error:
        raise DataError(path, f"not a readable NIfTI file ({error})") from None
    shape = image.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3 or min(shape) < 2:
        raise DataError(path, f"expected a 3D CT volume, got NIfTI data of shape {tuple(image.shape)}")
    ornt = nib.orientations.io_orientation(image.affine)
    zooms = image.header.get_zooms()[:3]
    by_world_spacing = {int(ornt[i, 0]): float(zooms[i]) for i in range(3)}  # world axis 0=x, 1=y, 2=z
    by_world_size = {int(ornt[i, 0]): int(shape[i]) for i in range(3)}
    return (
        (by_world_spacing[2], by_world_spacing[1], by_world_spacing[0]),
        (by_world_size[2], by_world_size[1], by_world_size[0]),
    )


def check_nifti_header(path: Path) -> tuple[float, float, float]:
    """Read a NIfTI header; require a 3D volume; return its axial spacing (z, y, x) in mm."""
    return nifti_geometry(path)[0]


def read_slice(path: Path) -> np.ndarray:
    """Decode one slice to float32 ``[H, W]``: PNG/JPG gray levels 0-255, TIFF converted to HU."""
    suffix = path.suffix.lower()
    try:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            raw = tifffile.imread(path)
            if raw.ndim != 2:
                raise DataError(path, f"expected a 2D grayscale slice, got shape {raw.shape}")
            _check_tiff_dtype(path, raw.dtype)
            return raw.astype(np.float32) - TIFF_HU_OFFSET
        from PIL import Image

        with Image.open(path) as image:
            if image.mode not in _EIGHT_BIT_MODES:
                raise DataError(path, f"expected an 8-bit grayscale or colour slice, got PIL mode {image.mode!r}")
            if image.mode != "L":
                image = image.convert("L")
            return np.asarray(image, dtype=np.float32)
    except DataError:
        raise
    except Exception as error:  # truncated / corrupt files raise OSError, ValueError, struct.error ...
        raise DataError(path, f"cannot decode image ({type(error).__name__}: {error})") from None


def _slice_kind(paths: Sequence[Path]) -> str:
    suffixes = {p.suffix.lower() for p in paths}
    if suffixes <= set(TIFF_SUFFIXES):
        return "hu"
    if suffixes <= set(PNG_SUFFIXES):
        return "gray8"
    raise DataError(paths[0].parent, f"mixed slice file types {sorted(suffixes)} in one scan")


def _read_slice_stack(paths: Sequence[Path]) -> tuple[np.ndarray, str]:
    kind = _slice_kind(paths)
    slices = []
    for path in paths:
        image = read_slice(path)
        if slices and image.shape != slices[0].shape:
            raise DataError(
                path, f"slice size {image.shape[0]}x{image.shape[1]} differs from "
                f"{slices[0].shape[0]}x{slices[0].shape[1]} of {paths[0].name} in the same scan"
            )
        slices.append(image)
    return np.stack(slices), kind


@functools.lru_cache(maxsize=None)
def _loader(reader: str):
    """One MONAI ``LoadImage`` per reader and process (building one registers every reader)."""
    import logging
    import warnings

    from monai.transforms import LoadImage

    # LoadImage instantiates every reader; the GPU DICOM codec's absence is expected on CPU machines.
    codec_logger = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    level = codec_logger.level
    codec_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader", category=UserWarning)
            return LoadImage(reader=reader, image_only=True, ensure_channel_first=True, dtype=np.float32)
    finally:
        codec_logger.setLevel(level)


@functools.lru_cache(maxsize=None)
def _orientation():
    from monai.transforms import Orientation

    # Loaded MetaTensors carry RAS-space affines; the labels say so explicitly.
    return Orientation(axcodes=AXIAL_AXCODES, labels=(("L", "R"), ("P", "A"), ("I", "S")))


def _read_monai_volume(path: Path, reader: str) -> np.ndarray:
    """Load a NIfTI file or DICOM series folder with MONAI and orient it to axial ``[D, H, W]``."""
    try:
        image = _loader(reader)(str(path))
    except Exception as error:
        raise DataError(path, f"cannot read volume ({type(error).__name__}: {error})") from None
    if image.ndim == 5 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 4 or image.shape[0] != 1:
        raise DataError(path, f"expected one 3D CT volume, got data of shape {tuple(image.shape)}")
    oriented = _orientation()(image)
    return np.ascontiguousarray(oriented[0].numpy(), dtype=np.float32)


def read_scan(paths: Sequence[Path]) -> tuple[np.ndarray, str]:
    """Decode a scan's files into float32 ``[D, H, W]`` (axial slices along D) and its intensity kind.

    Raises :class:`DataError` naming the file for unreadable, truncated or inconsistent input and for
    NaN/infinite voxels.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError(Path("."), "scan has no files")
    first = paths[0]
    if len(paths) == 1 and is_nifti(first):
        volume, kind = _read_monai_volume(first, "NibabelReader"), "hu"
    elif len(paths) == 1 and first.is_dir():
        volume, kind = _read_monai_volume(first, "PydicomReader"), "hu"
    else:
        volume, kind = _read_slice_stack(paths)
    if volume.ndim != 3 or volume.shape[0] < 1:
        raise DataError(first, f"expected a 3D volume, got shape {volume.shape}")
    if not np.isfinite(volume).all():
        bad = int((~np.isfinite(volume)).sum())
        raise DataError(first, f"contains {bad} NaN or infinite voxel(s)")
    return volume, kind


def read_mask(path: Path) -> np.ndarray:
    """Read a lesion mask NIfTI as uint8 ``[D, H, W]`` in the same axial orientation as :func:`read_scan`."""
    volume = _read_monai_volume(Path(path), "NibabelReader")
    return (volume > 0.5).astype(np.uint8)
