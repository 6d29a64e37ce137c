"""Reading scans from disk: header checks for the readers and full decoding into axial volumes.

Every decoded volume is a float32 array ``[D, H, W]`` with axial slices along D, rows running
anterior -> posterior and columns patient-right -> patient-left (radiological display), plus an
intensity *kind*: ``"hu"`` (Hounsfield units: NIfTI, DICOM, 16-bit TIFF) or ``"gray8"`` (8-bit PNG/JPG
already windowed by the data provider, values 0-255).
"""
from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import stat
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from nni_covid3d.data.records import DataError

__all__ = [
    "PNG_SUFFIXES",
    "TIFF_SUFFIXES",
    "NIFTI_SUFFIXES",
    "DICOM_SUFFIXES",
    "TIFF_HU_OFFSET",
    "read_csv",
    "describe_error",
    "require_regular_file",
    "is_nifti",
    "is_dicom_file",
    "check_dicom_series",
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
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
#: COVID-CTset stores HU + 1024 as unsigned 16-bit.
TIFF_HU_OFFSET = 1024
#: Sample types a TIFF slice may have: 16-bit integers (an 8-bit or float slice is another encoding).
TIFF_DTYPES = ("uint16", "int16")
#: The orientation MONAI's ``Orientation`` gives volumes: array axes (D, H, W) run towards
#: Superior, Posterior and patient-Left, i.e. axial slices with radiological in-plane display.
AXIAL_AXCODES = "SPL"
#: PIL modes of 8-bit PNG/JPG slices (colour ones are converted to gray).
_EIGHT_BIT_MODES = ("L", "LA", "P", "RGB", "RGBA")
#: The PIL image formats each 8-bit slice extension may hold (a file's content must match its name).
_PIL_FORMATS = {".png": ("PNG",), ".jpg": ("JPEG", "MPO"), ".jpeg": ("JPEG", "MPO")}


def require_regular_file(path: Path) -> Path:
    """``path`` itself, after checking it is a regular file (a symbolic link to one is fine).

    A broken or looping symbolic link, a folder, pipe or device raises :class:`DataError` naming it,
    so no reader skips it or blocks on it.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise DataError(path, "symbolic link loop (the link never reaches a file)") from None
        if os.path.islink(path):
            raise DataError(path, "broken symbolic link (its target does not exist)") from None
        raise DataError(path, f"cannot be read ({error.strerror})") from None
    if stat.S_ISDIR(mode):
        raise DataError(path, "is a folder where a file was expected")
    if not stat.S_ISREG(mode):
        raise DataError(path, "not a regular file (a pipe, socket or device)")
    return path


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """A release CSV file as (column names, rows); a byte-order mark and blank lines are ignored.

    A file that is not UTF-8 text, not a readable CSV, or has a row with more or fewer fields than
    its header (a cut or damaged file) raises :class:`DataError` naming it.
    """
    import csv
    import io

    try:
        text = require_regular_file(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(path, f"not a UTF-8 text CSV file (byte {error.start}: {error.reason})") from None
    if "\x00" in text:
        raise DataError(path, "not a text CSV file (it holds NUL bytes)")
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        table = [row for row in reader if row]
    except csv.Error as error:
        raise DataError(path, f"not a readable CSV file: {error}") from None
    if not table:
        raise DataError(path, "empty CSV file (no header row)")
    fields, rows = table[0], []
    for number, row in enumerate(table[1:], start=2):  # the header is row 1
        if len(row) != len(fields):
            raise DataError(path, f"row {number} has {len(row)} field(s) where the header has {len(fields)} (a cut or damaged file?)")
        rows.append(dict(zip(fields, row)))
    return fields, rows


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def is_dicom_file(path: Path) -> bool:
    """DICOM by extension, or by the ``DICM`` magic at byte 128 for a regular file without an image
    extension (series files often have none, or a number as one)."""
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return True
    if suffix in PNG_SUFFIXES + TIFF_SUFFIXES or is_nifti(path):
        return False
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False  # never open a pipe: it would block
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def describe_error(error: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message (no tracebacks)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else 'no message'}"


def _dicom_entries(folder: Path) -> list[Path]:
    """The DICOM files of a series folder; any other visible entry raises :class:`DataError` naming it."""
    from nni_covid3d.data.records import natural_key

    entries = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=natural_key)
    files = []
    for path in entries:
        if os.path.isdir(path):
            raise DataError(path, "unexpected folder inside a DICOM series folder")
        require_regular_file(path)
        if not is_dicom_file(path):
            raise DataError(path, "not a DICOM file (no .dcm extension or DICM marker), in a DICOM series folder")
        files.append(path)
    if not files:
        raise DataError(folder, "contains no DICOM files")
    return files


def _dicom_pixel_bytes(header: Any) -> int | None:
    """Bytes of pixel data an uncompressed DICOM slice's header calls for (``None``: not computable)."""
    bits = int(getattr(header, "BitsAllocated", 0) or 0)
    if bits % 8 or not bits:
        return None
    frames = int(getattr(header, "NumberOfFrames", 1) or 1)
    samples = int(getattr(header, "SamplesPerPixel", 1) or 1)
    return int(header.Rows) * int(header.Columns) * samples * frames * bits // 8


def check_dicom_series(folder: Path, *, pixels: bool = False) -> list[Path]:
    """Check a DICOM series folder: only DICOM files, each readable, Modality CT, one series, one slice
    size, an InstanceNumber (the slice order); with ``pixels``, also that each slice's pixel data has
    the length its header calls for (finds truncated slices).

    Returns the DICOM files. Raises :class:`DataError` naming the offending file.
    """
    import pydicom

    first: dict[str, Any] = {}
    files = _dicom_entries(Path(folder))
    for path in files:
        try:
            header = pydicom.dcmread(str(path), stop_before_pixels=not pixels)
        except Exception as error:  # pydicom raises InvalidDicomError, OSError, struct.error, ...
            raise DataError(path, f"not a readable DICOM file ({describe_error(error)})") from None
        modality = str(getattr(header, "Modality", "") or "")
        if modality != "CT":
            raise DataError(path, f"DICOM Modality is {modality or 'missing'!r}, not 'CT': only CT series are accepted")
        try:
            size = (int(header.Rows), int(header.Columns))
            int(header.InstanceNumber)
        except (AttributeError, TypeError, ValueError) as error:
            raise DataError(path, f"DICOM slice lacks a valid Rows, Columns or InstanceNumber ({describe_error(error)})") from None
        if pixels:
            _check_dicom_pixels(path, header)
        info = {"series": str(getattr(header, "SeriesInstanceUID", "")), "size": size}
        if not first:
            first = {**info, "path": path}
            continue
        if info["series"] != first["series"]:
            raise DataError(path, f"belongs to another DICOM series than {first['path'].name}: one series per folder")
        if info["size"] != first["size"]:
            raise DataError(
                path, f"slice size {size[0]}x{size[1]} differs from "
                f"{first['size'][0]}x{first['size'][1]} of {first['path'].name} in the same series"
            )
    return files


def _check_dicom_pixels(path: Path, header: Any) -> None:
    if "PixelData" not in header:
        raise DataError(path, "DICOM slice has no pixel data (a cut or damaged file?)")
    syntax = getattr(getattr(header, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is not None and syntax.is_compressed:
        return  # an encapsulated stream: its length says nothing; decoding finds damage
    expected, found = _dicom_pixel_bytes(header), len(header.PixelData)
    if expected is not None and found not in (expected, expected + 1):  # one pad byte makes an odd length even
        what = "cut short" if found < expected else "longer than its header says"
        raise DataError(
            path, f"DICOM pixel data is {what}: {found} bytes where Rows x Columns x BitsAllocated call for {expected}"
        )


def check_slice_header(path: Path) -> tuple[int, int]:
    """Open a PNG/JPG/TIFF slice without decoding its pixels; return (height, width).

    Raises :class:`DataError` for a non-image file or one that is not a single 2D grayscale image.
    """
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES + PNG_SUFFIXES:
        require_regular_file(path)
    if suffix in TIFF_SUFFIXES:
        import tifffile

        try:
            with _tifffile_messages(path), tifffile.TiffFile(path) as tif:
                shape, dtype = tif.pages[0].shape, tif.pages[0].dtype
        except Exception as error:  # tifffile raises several types for garbage input
            raise DataError(path, f"not a readable TIFF image ({describe_error(error)})") from None
        if len(shape) != 2:
            raise DataError(path, f"expected a 2D grayscale slice, got an image of shape {tuple(shape)}")
        _check_tiff_dtype(path, dtype)
        return int(shape[0]), int(shape[1])
    if suffix in PNG_SUFFIXES:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                width, height = image.size
                _check_pil_format(path, image.format)
        except (UnidentifiedImageError, OSError) as error:
            raise DataError(path, f"not a readable image ({describe_error(error)})") from None
        return height, width
    raise DataError(path, f"unsupported slice file type {suffix!r} (expected PNG, JPG or TIFF)")


def _check_pil_format(path: Path, found: str | None) -> None:
    expected = _PIL_FORMATS[path.suffix.lower()]
    if found not in expected:
        raise DataError(path, f"file holds a {found or 'unknown'} image, not {expected[0]} as its extension says")


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


@contextlib.contextmanager
def _logged_messages(logger: logging.Logger) -> Iterator[list[str]]:
    """Collect what a library logs (warnings and worse) while reading a file, instead of letting it
    print messages that do not name the file; the caller reports them with the file's name."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = _Collect(level=logging.WARNING)
    saved, propagate = list(logger.handlers), logger.propagate
    for old in saved:
        logger.removeHandler(old)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        for old in saved:
            logger.addHandler(old)
        logger.propagate = propagate


def _nibabel_messages() -> contextlib.AbstractContextManager[list[str]]:
    """Header problems nibabel logs (and silently fixes) while loading."""
    from nibabel import imageglobals

    return _logged_messages(imageglobals.logger)


def _warn_logged(path: Path, messages: Sequence[str], what: str, stacklevel: int = 3) -> None:
    for message in dict.fromkeys(messages):
        warnings.warn(f"{path}: {what}: {message}", stacklevel=stacklevel)


@contextlib.contextmanager
def _tifffile_messages(path: Path) -> Iterator[None]:
    """Problems tifffile logs while reading a slice it can still decode become warnings naming the file
    (when it cannot decode it, the error raised names the file)."""
    with _logged_messages(logging.getLogger("tifffile")) as messages:
        yield
    _warn_logged(path, messages, "TIFF problem", stacklevel=5)


def nifti_geometry(path: Path) -> tuple[tuple[float, float, float], tuple[int, int, int]]:
    """Read a NIfTI header; require a 3D volume with positive voxel sizes and a usable affine; return
    its spacing (z, y, x) in mm and its shape (D, H, W), both in the axial orientation :func:`read_scan` gives."""
    import nibabel as nib

    require_regular_file(path)
    try:
        with _nibabel_messages() as messages:
            image = nib.load(str(path))
    except Exception as error:
        raise DataError(path, f"not a readable NIfTI file ({describe_error(error)})") from None
    for message in messages:
        if "pixdim" in message:  # nibabel would replace a zero or negative voxel size by a guess
            raise DataError(path, f"bad NIfTI header: {message.split(';')[0]} (voxel sizes must be positive)")
    _warn_logged(path, messages, "NIfTI header problem, fixed on reading")
    shape = image.shape
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3 or min(shape) < 2:
        raise DataError(path, f"expected a 3D CT volume, got NIfTI data of shape {tuple(image.shape)}")
    zooms = np.asarray(image.header.get_zooms()[:3], dtype=np.float64)
    if not (np.isfinite(zooms).all() and (zooms > 0).all()):
        raise DataError(path, f"bad NIfTI header: voxel sizes {tuple(float(z) for z in zooms)} must be positive numbers")
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise DataError(path, "bad NIfTI header: its affine (qform/sform) is not finite or not invertible")
    ornt = nib.orientations.io_orientation(affine)
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
    require_regular_file(path)
    try:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            with _tifffile_messages(path):
                raw = tifffile.imread(path)
            if raw.ndim != 2:
                raise DataError(path, f"expected a 2D grayscale slice, got shape {raw.shape}")
            _check_tiff_dtype(path, raw.dtype)
            return raw.astype(np.float32) - TIFF_HU_OFFSET
        from PIL import Image

        with Image.open(path) as image:
            _check_pil_format(path, image.format)
            if image.mode not in _EIGHT_BIT_MODES:
                raise DataError(path, f"expected an 8-bit grayscale or colour slice, got PIL mode {image.mode!r}")
            if image.mode != "L":
                image = image.convert("L")
            return np.asarray(image, dtype=np.float32)
    except DataError:
        raise
    except Exception as error:  # truncated / corrupt files raise OSError, ValueError, struct.error ...
        raise DataError(path, f"cannot decode image ({describe_error(error)})") from None


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


def _read_monai_volume(path: Path, reader: str, *, n_slices: int | None = None) -> np.ndarray:
    """Load a NIfTI file or DICOM series folder with MONAI and orient it to axial ``[D, H, W]``;
    ``n_slices``: the number of slices the series' files hold (a reader dropping one is an error)."""
    try:
        with _nibabel_messages():  # nifti_geometry reports them, naming the file
            image = _loader(reader)(str(path))
    except Exception as error:
        raise DataError(path, f"cannot read volume ({describe_error(error)})") from None
    if image.ndim == 5 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 4 or image.shape[0] != 1:
        raise DataError(path, f"expected one 3D CT volume, got data of shape {tuple(image.shape)}")
    if n_slices is not None and image.shape[-1] != n_slices:
        raise DataError(path, f"the series' files hold {n_slices} slices, but {image.shape[-1]} were read")
    oriented = _orientation()(image)
    return np.ascontiguousarray(oriented[0].numpy(), dtype=np.float32)


def _read_dicom_series(folder: Path) -> np.ndarray:
    """Decode a checked DICOM series folder; a slice that fails to decode is named."""
    import pydicom

    files = check_dicom_series(folder, pixels=True)
    try:
        return _read_monai_volume(folder, "PydicomReader", n_slices=len(files) if len(files) > 1 else None)
    except DataError:
        for path in files:  # find the slice MONAI choked on
            try:
                pydicom.dcmread(str(path)).pixel_array
            except Exception as error:
                raise DataError(path, f"cannot decode DICOM pixel data ({describe_error(error)})") from None
        raise


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
        shape = nifti_geometry(first)[1]
        volume, kind = _read_monai_volume(first, "NibabelReader"), "hu"
        if volume.shape != shape:
            raise DataError(first, f"NIfTI header says shape {shape}, the data read has {volume.shape}")
    elif len(paths) == 1 and first.is_dir():
        volume, kind = _read_dicom_series(first), "hu"
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
    nifti_geometry(Path(path))
    volume = _read_monai_volume(Path(path), "NibabelReader")
    return (volume > 0.5).astype(np.uint8)
