"""Hostile input: seeded corruptions of every input kind, run through the real readers and the CLI.

Each case copies a small pristine input (a dataset in one of the three release layouts, a single
NIfTI / DICOM / PNG / TIFF scan, or a checkpoint), corrupts one file of it and reads it the way a
user would. The outcome is classified:

* ``error``: a clear error whose message names the corrupted file;
* ``unnamed``: an error that does not name it;
* ``crash``: an exception the CLI would print as a traceback (not a ``ValueError`` /
  ``FileNotFoundError`` kind), or a traceback in the CLI's output;
* ``benign``: the read succeeded and gave exactly the pristine data (the corruption did not matter);
* ``silent``: the read succeeded with different data (e.g. a slice fewer);
* ``hang``: the case did not finish within :data:`CASE_TIMEOUT` seconds.

Only ``error`` and ``benign`` are allowed. Run with ``-s`` to see the counts.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import threading
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pydicom
import pytest
import tifffile
import torch
from PIL import Image

from nni_covid3d.cli import main
from nni_covid3d.data import load_dataset, load_single_scan, read_scan, write_synthetic_dataset
from nni_covid3d.data.synthetic import save_axial_nifti, write_dicom_series
from nni_covid3d.predict import Predictor
from nni_covid3d.training.checkpoint import CHECKPOINT_KEY
from tests.cam.conftest import save_tiny_checkpoint

#: Seconds one case may take before it counts as a hang.
CASE_TIMEOUT = 30.0
OUTCOMES = ("error", "unnamed", "crash", "benign", "silent", "hang")
#: tifffile's complaints about a damaged slice it can still parse come as warnings naming the file.
pytestmark = pytest.mark.filterwarnings("ignore:.*TIFF problem:UserWarning")
#: Exceptions the readers raise for bad input (the CLI prints them as one line, without a traceback).
CLEAR_ERRORS = (ValueError, FileNotFoundError)


# ------------------------------------------------------------------------------------ corruptions
def _truncate(rng: np.random.Generator, path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(rng.integers(1, len(data)))])


def _truncate_header(rng: np.random.Generator, path: Path) -> None:
    path.write_bytes(path.read_bytes()[: int(rng.integers(0, 48))])


def _empty(rng: np.random.Generator, path: Path) -> None:
    path.write_bytes(b"")


def _random_bytes(rng: np.random.Generator, path: Path) -> None:
    path.write_bytes(rng.bytes(max(path.stat().st_size, 256)))


def _text(rng: np.random.Generator, path: Path) -> None:
    path.write_text("this is a note, not image data\n" * 4)


def _bad_magic(rng: np.random.Generator, path: Path) -> None:
    data = bytearray(path.read_bytes())
    start = 128 if data[128:132] == b"DICM" else 0  # DICOM's marker follows a free 128-byte preamble
    data[start : start + 4] = bytes(b ^ 0x5A for b in data[start : start + 4])
    path.write_bytes(bytes(data))


def _symlink_loop(rng: np.random.Generator, path: Path) -> None:
    path.unlink()
    os.symlink(path.name, path)


def _broken_link(rng: np.random.Generator, path: Path) -> None:
    path.unlink()
    os.symlink(path.name + ".gone", path)


def _fifo(rng: np.random.Generator, path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _folder(rng: np.random.Generator, path: Path) -> None:
    path.unlink()
    path.mkdir()


#: Damage any file can suffer.
GENERIC = {
    "truncate": _truncate, "truncate_header": _truncate_header, "empty": _empty, "random_bytes": _random_bytes,
    "text": _text, "bad_magic": _bad_magic, "symlink_loop": _symlink_loop, "broken_link": _broken_link,
    "fifo": _fifo, "folder": _folder,
}


def _gray(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size[1], image.size[0]


def _as_jpeg(rng, path):
    Image.fromarray(_gray(rng, _png_size(path))).save(path, format="JPEG")


def _as_png(rng, path):
    Image.fromarray(_gray(rng, (24, 24))).save(path, format="PNG")


def _as_tiff(rng, path):
    tifffile.imwrite(path, rng.integers(0, 2000, size=(24, 24), dtype=np.uint16))


def _as_nifti(rng, path):
    buffer = io.BytesIO()
    import nibabel as nib

    buffer.write(nib.Nifti1Image(np.zeros((8, 8, 4), np.int16), np.eye(4)).to_bytes())
    path.write_bytes(gzip.compress(buffer.getvalue()))


def _png_other_size(rng, path):
    height, width = _png_size(path)
    Image.fromarray(_gray(rng, (height + 3, width))).save(path, format="PNG" if path.suffix == ".png" else "JPEG")


def _png_sixteen_bit(rng, path):
    Image.fromarray(rng.integers(0, 4000, size=_png_size(path), dtype=np.uint16)).save(path, format="PNG")


def _png_swap_format(rng, path):
    """JPEG data under a .png name, PNG data under a .jpg name."""
    (_as_png if path.suffix.lower() in (".jpg", ".jpeg") else _as_jpeg)(rng, path)


PNG = {**GENERIC, "other_format": _png_swap_format, "as_tiff": _as_tiff, "as_nifti": _as_nifti, "other_size": _png_other_size,
       "sixteen_bit": _png_sixteen_bit}


def _tiff_shape(path: Path) -> tuple[int, int]:
    return tuple(tifffile.imread(path).shape)


def _tiff_other_size(rng, path):
    height, width = _tiff_shape(path)
    tifffile.imwrite(path, rng.integers(0, 2000, size=(height, width + 5), dtype=np.uint16))


def _tiff_dtype(dtype: str) -> Callable:
    def corrupt(rng, path):
        tifffile.imwrite(path, np.zeros(_tiff_shape(path), dtype=dtype))
    return corrupt


def _tiff_rgb(rng, path):
    tifffile.imwrite(path, np.zeros((*_tiff_shape(path), 3), dtype=np.uint16), photometric="rgb")


def _tiff_multipage(rng, path):
    tifffile.imwrite(path, np.zeros((3, *_tiff_shape(path)), dtype=np.uint16), photometric="minisblack")


TIFF = {**GENERIC, "as_png": _as_png, "as_nifti": _as_nifti, "other_size": _tiff_other_size, "eight_bit": _tiff_dtype("uint8"),
        "float": _tiff_dtype("float32"), "rgb": _tiff_rgb, "multipage": _tiff_multipage}


def _nifti_patch(offset: int, fmt: str, value: Any) -> Callable:
    """Overwrite one NIfTI-1 header field in the (gzipped) file's bytes: nibabel would fix it on writing."""
    def corrupt(rng, path):
        raw = bytearray(gzip.decompress(path.read_bytes()))
        struct.pack_into(fmt, raw, offset, value)
        path.write_bytes(gzip.compress(bytes(raw)))
    return corrupt


def _nifti_nan_voxels(rng, path):
    import nibabel as nib

    image = nib.load(str(path))
    data = np.asarray(image.dataobj).astype(np.float32)
    data.flat[int(rng.integers(0, data.size))] = np.nan
    nib.save(nib.Nifti1Image(data, image.affine), str(path))


def _nifti_shape(shape: Callable[[tuple[int, ...]], tuple[int, ...]]) -> Callable:
    def corrupt(rng, path):
        import nibabel as nib

        image = nib.load(str(path))
        nib.save(nib.Nifti1Image(np.zeros(shape(image.shape), np.int16), image.affine), str(path))
    return corrupt


def _nifti_uncompressed(rng, path):
    path.write_bytes(gzip.decompress(path.read_bytes()))


NIFTI = {
    **GENERIC, "as_png": _as_png, "as_tiff": _as_tiff, "uncompressed_under_gz": _nifti_uncompressed,
    "pixdim_zero": _nifti_patch(80, "<f", 0.0), "pixdim_negative": _nifti_patch(88, "<f", -2.5),
    "pixdim_nan": _nifti_patch(84, "<f", float("nan")), "dim_too_big": _nifti_patch(42, "<h", 999),
    "dim_zero": _nifti_patch(44, "<h", 0), "bad_datatype": _nifti_patch(70, "<h", 777),
    "bad_magic_field": _nifti_patch(344, "4s", b"xy1\0"), "vox_offset_beyond": _nifti_patch(108, "<f", 1e7),
    "sform_nan": _nifti_patch(280, "<f", float("nan")), "nan_voxels": _nifti_nan_voxels,
    "two_d": _nifti_shape(lambda s: s[:2]), "four_d": _nifti_shape(lambda s: (*s, 3)),
}


def _dicom_edit(edit: Callable[[pydicom.Dataset], None]) -> Callable:
    def corrupt(rng, path):
        ds = pydicom.dcmread(str(path))
        edit(ds)
        ds.save_as(str(path))
    return corrupt


def _set_rows(ds):
    ds.Rows = ds.Rows + 4
    ds.PixelData = np.zeros((ds.Rows, ds.Columns), np.uint16).tobytes()


def _eight_bits(ds):
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7


def _dicom_second_series(rng, path):
    other = write_dicom_series(path.parent.parent / "other_series", np.zeros((2, 24, 24), np.int16), (5.0, 0.8, 0.8))
    shutil.copy(other / "IM0001.dcm", path)
    shutil.rmtree(other)


def _stray_note(rng, path):
    path.unlink()
    path.with_name("notes.txt").write_text("scanner notes")


DICOM = {
    **GENERIC, "as_png": _as_png, "as_nifti": _as_nifti, "second_series": _dicom_second_series, "stray_file": _stray_note,
    "other_rows": _dicom_edit(_set_rows), "eight_bit_header": _dicom_edit(_eight_bits),
    "no_pixel_data": _dicom_edit(lambda ds: delattr(ds, "PixelData")),
    "no_instance_number": _dicom_edit(lambda ds: delattr(ds, "InstanceNumber")),
    "modality_mr": _dicom_edit(lambda ds: setattr(ds, "Modality", "MR")),
}


def _rewrite_csv(edit: Callable[[list[list[str]], np.random.Generator], None]) -> Callable:
    def corrupt(rng, path):
        rows = [line.split(",") for line in path.read_text().splitlines()]
        edit(rows, rng)
        path.write_text("".join(",".join(row) + "\n" for row in rows))
    return corrupt


def _row(rows: list[list[str]], rng: np.random.Generator) -> list[str]:
    return rows[int(rng.integers(1, len(rows)))]


def _ragged(rows, rng):
    row = _row(rows, rng)
    del row[-1]


def _rename_column(rows, rng):
    rows[0] = [f"col{i}" for i in range(len(rows[0]))]


def _truncate_mid_row(rng: np.random.Generator, path: Path) -> None:
    """A cut download: the file ends inside a row (a cut exactly between rows leaves a valid, shorter CSV)."""
    data = path.read_bytes()
    cuts = [i for i in range(1, len(data) - 1) if data[i - 1 : i] != b"\n" and data[i : i + 1] not in (b"\n", b"\r")]
    path.write_bytes(data[: cuts[int(rng.integers(0, len(cuts)))]])


CSV = {
    "truncate": _truncate_mid_row, "empty": _empty, "random_bytes": _random_bytes, "bad_magic": _bad_magic,
    "symlink_loop": _symlink_loop, "fifo": _fifo, "ragged_row": _rewrite_csv(_ragged), "renamed_columns": _rewrite_csv(_rename_column),
}


def _column_edit(column: str, value: Callable[[str], str]) -> Callable:
    def edit(rows, rng):
        index = rows[0].index(column)
        row = _row(rows, rng)
        row[index] = value(row[index])
    return _rewrite_csv(edit)


def _append_row(row: list[str]) -> Callable:
    return _rewrite_csv(lambda rows, rng: rows.append(list(row)))


def _duplicate_with_other_class(rows, rng):
    row = list(_row(rows, rng))
    index = rows[0].index("class")
    row[index] = "normal" if row[index] == "covid" else "covid"
    rows.append(row)


CCCCII_CSV = {
    "unzip_filenames.csv": {**CSV, "label_contradiction": _column_edit("label", lambda v: "NCP" if v != "NCP" else "CP")},
    "lesions_slices.csv": {**{k: v for k, v in CSV.items() if k != "ragged_row"},  # one column: no row can be short
                           "bad_imgpath": _rewrite_csv(lambda rows, rng: rows.append(["no/such"])),
                           "unknown_slice": _rewrite_csv(lambda rows, rng: _row(rows, rng).__setitem__(0, _row(rows, rng)[0] + "x"))},
}
DETAILS_CSV = {
    **CSV, "unknown_class": _column_edit("class", lambda v: "influenza"),
    "patient_without_folder": _append_row(["patient77", "covid1", "covid", "1"]),
    "conflicting_duplicate": _rewrite_csv(_duplicate_with_other_class),
}
FOLD_CSV = {
    **CSV, "missing_image": _append_row(["covid1_patient1_SR_2_IM09999.tif", "covid"]),
    "bad_file_name": _append_row(["scan.tif", "covid"]),
    "unknown_class": _column_edit("class", lambda v: "influenza"),
}


def _registry_edit(edit: Callable[[Any], Any]) -> Callable:
    def corrupt(rng, path):
        import pandas as pd

        edit(pd.read_excel(path)).to_excel(path, index=False)
    return corrupt


def _wrong_category(table):
    table.loc[0, "category"] = "CT-4" if table.loc[0, "category"] != "CT-4" else "CT-0"
    return table


REGISTRY = {
    "truncate": _truncate, "random_bytes": _random_bytes, "empty": _empty, "fifo": _fifo,
    "wrong_category": _registry_edit(_wrong_category),
    "missing_column": _registry_edit(lambda table: table.drop(columns=["category"])),
}


def _checkpoint_edit(edit: Callable[[dict], None], **save: Any) -> Callable:
    def corrupt(rng, path):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        edit(checkpoint)
        torch.save(checkpoint, path, **save)
    return corrupt


def _flip_record(pickle: bool) -> Callable:
    def corrupt(rng, path):
        raw = bytearray(path.read_bytes())
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if m.file_size and m.filename.endswith("data.pkl") == pickle]
        member = members[int(rng.integers(0, len(members)))]
        name_length, extra_length = struct.unpack_from("<HH", raw, member.header_offset + 26)
        start = member.header_offset + 30 + name_length + extra_length
        raw[start + int(rng.integers(0, member.file_size))] ^= 0xFF
        path.write_bytes(bytes(raw))
    return corrupt


def _foreign_zip(rng, path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not a checkpoint")


def _unsafe_pickle(rng, path):
    torch.save({"state_dict": {}, CHECKPOINT_KEY: {"format_version": 1, "where": Path("/tmp")}}, path)


def _meta(edit: Callable[[dict], None]) -> Callable:
    return _checkpoint_edit(lambda checkpoint: edit(checkpoint[CHECKPOINT_KEY]))


def _wrong_shape(checkpoint):
    key = sorted(k for k, v in checkpoint["state_dict"].items() if v.ndim > 1)[0]
    checkpoint["state_dict"][key] = torch.zeros(3, 3)


CHECKPOINT = {
    **GENERIC, "as_nifti": _as_nifti, "as_png": _as_png, "foreign_zip": _foreign_zip, "unsafe_pickle": _unsafe_pickle,
    "flip_weights": _flip_record(pickle=False), "flip_pickle": _flip_record(pickle=True),
    "plain_state_dict": _checkpoint_edit(lambda c: c.pop(CHECKPOINT_KEY)),
    "bad_version": _meta(lambda m: m.update(format_version=99)),
    "meta_missing_key": _meta(lambda m: m.pop("class_names")),
    "meta_wrong_type": _meta(lambda m: m.update(num_classes="three")),
    "bad_arch": _meta(lambda m: m.update(arch={"cells": "garbage"})),
    "bad_preprocessing": _meta(lambda m: m.update(preprocessing={"depth": 8, "colour": "red"})),
    "no_preprocessing": _meta(lambda m: m.update(preprocessing=None)),
    "wrong_shapes": _checkpoint_edit(_wrong_shape),
    "legacy_format": _checkpoint_edit(lambda c: None, _use_new_zipfile_serialization=False),
}


# ----------------------------------------------------------------------------------- the inputs
@dataclass(frozen=True)
class Spec:
    """One case: which input kind, which corruption, which seed (the file hit and the damage's details)."""

    kind: str
    corruption: str
    seed: int

    def __str__(self) -> str:
        return f"{self.kind}/{self.corruption}/{self.seed}"


def _specs(kind: str, corruptions: dict | list, seeds: int = 1, *, more: dict[str, int] | None = None) -> list[Spec]:
    out = []
    for name in corruptions:
        n = (more or {}).get(name, seeds)
        out += [Spec(kind, name, seed) for seed in range(n)]
    return out


_RANDOM = {"truncate": 4, "random_bytes": 2}
SPECS = {
    "ccccii": _specs("ccccii", PNG, 2, more=_RANDOM)
    + _specs("ccccii-csv", [f"{f}:{c}" for f, cs in CCCCII_CSV.items() for c in cs], more={f"{f}:truncate": 3 for f in CCCCII_CSV}),
    "mosmed": _specs("mosmed", NIFTI, more=_RANDOM) + _specs("mosmed-registry", REGISTRY),
    "covidctset": _specs("covidctset", TIFF, 2, more=_RANDOM) + _specs("covidctset-details", DETAILS_CSV, more={"truncate": 3})
    + _specs("covidctset-folds", FOLD_CSV),
    "nifti": _specs("nifti", NIFTI, more={"truncate": 5}),
    "dicom": _specs("dicom", DICOM, more={"truncate": 6, "truncate_header": 2}),
    "png-folder": _specs("png-folder", PNG, more={"truncate": 3}),
    "tiff-folder": _specs("tiff-folder", TIFF, more={"truncate": 3}),
    "checkpoint": _specs("checkpoint", CHECKPOINT, more={"truncate": 6, "flip_weights": 4, "flip_pickle": 2}),
    "cli-summary": [Spec(f"cli-summary-{layout}{'-skip' if skip else ''}", corruption, seed)
                    for layout, table in (("ccccii", PNG), ("mosmed", NIFTI), ("covidctset", TIFF))
                    for skip in (False, True)
                    for seed, corruption in enumerate(("truncate", "random_bytes", "symlink_loop", "other_size", "fifo", "text"))
                    if corruption in table]
    + [Spec(f"cli-summary-covidctset-details{'-skip' if skip else ''}", "patient_without_folder", 0) for skip in (False, True)],
    "cli-predict": [Spec(f"cli-predict-{kind}", corruption, 0) for kind, corruptions in (
        ("nifti", ("truncate", "pixdim_zero", "text")), ("dicom", ("symlink_loop", "second_series", "truncate", "as_png", "other_rows")),
        ("png-folder", ("symlink_loop", "as_tiff")), ("tiff-folder", ("truncate", "fifo")),
        ("checkpoint", ("truncate", "flip_weights", "bad_arch", "random_bytes")),
    ) for corruption in corruptions],
}


def _digest(volume: np.ndarray, kind: str) -> str:
    return f"{volume.shape}:{kind}:{hashlib.sha1(np.ascontiguousarray(volume).tobytes()).hexdigest()}"


def read_dataset(layout: str, root: Path, **options: Any) -> tuple:
    """Every scan of a dataset, fully checked and decoded: (label, key, voxel digest) each, the lesion
    slices listed for them, and the skipped."""
    index = load_dataset(layout, root, check="full", **options)
    scans = tuple(sorted((s.label_name, s.key, _digest(*read_scan(s.paths))) for s in index.scans))
    lesions = json.dumps(index.metadata.get("lesion_slices"), sort_keys=True)
    return scans, lesions, tuple(sorted(str(s.path.relative_to(root)) for s in index.skipped))


def read_single(path: Path) -> str:
    scan = load_single_scan(path)
    return _digest(*read_scan(scan.paths))


def read_checkpoint_weights(path: Path) -> str:
    """A checkpoint read as ``predict`` does (model, metadata, preprocessing): a digest of its weights."""
    predictor = Predictor(path)
    state = predictor.model.state_dict()
    return hashlib.sha1(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    """Small clean inputs of every kind."""
    base = tmp_path_factory.mktemp("pristine")
    rng = np.random.default_rng(0)
    small = dict(seed=1, size=24, slices=(3, 4))
    inputs = {
        "ccccii": write_synthetic_dataset("ccccii", base / "ccccii", n_patients=3, **small),
        "mosmed": write_synthetic_dataset("mosmed", base / "mosmed", n_patients=3, **small),
        "covidctset": write_synthetic_dataset("covidctset", base / "covidctset", n_patients=3, **small),
        "covidctset-folds": write_synthetic_dataset("covidctset", base / "folds", n_patients=3, variant="folds", **small),
    }
    volume = rng.normal(-700, 150, size=(5, 24, 24)).astype(np.int16)
    save_axial_nifti(base / "scan.nii.gz", volume, (5.0, 0.8, 0.8))
    inputs["nifti"] = base / "scan.nii.gz"
    inputs["dicom"] = write_dicom_series(base / "dicom", volume, (5.0, 0.8, 0.8))
    for kind, write in (("png-folder", lambda p, z: Image.fromarray(_gray(rng, (24, 24))).save(p)),
                        ("tiff-folder", lambda p, z: tifffile.imwrite(p, (volume[z] + 1024).astype(np.uint16)))):
        folder = base / kind
        folder.mkdir()
        for z in range(len(volume)):
            write(folder / f"{z}.{'png' if kind == 'png-folder' else 'tif'}", z)
        inputs[kind] = folder
    inputs["checkpoint"] = save_tiny_checkpoint(base / "tiny.ckpt")
    return inputs


@pytest.fixture(scope="module")
def expected(pristine) -> dict[str, Any]:
    """What each pristine input reads as."""
    out: dict[str, Any] = {layout: read_dataset(layout.split("-")[0], pristine[layout]) for layout in
                           ("ccccii", "mosmed", "covidctset", "covidctset-folds")}
    out.update({kind: read_single(pristine[kind]) for kind in ("nifti", "dicom", "png-folder", "tiff-folder")})
    out["checkpoint"] = read_checkpoint_weights(pristine["checkpoint"])
    return out


# ------------------------------------------------------------------------------------ the cases
def _pick(rng: np.random.Generator, files: list[Path]) -> Path:
    return sorted(files)[int(rng.integers(0, len(files)))]


def _slices(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return [p for p in root.rglob("*") if p.suffix.lower() in suffixes and "lesion_masks" not in p.parts and p.is_file()]


def _copy(source: Path, work: Path) -> Path:
    target = work / source.name
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True)
    else:
        shutil.copy(source, target)
    return target


def prepare(spec: Spec, pristine: dict[str, Path], work: Path) -> tuple[Path, Path, str]:
    """Copy the spec's pristine input into ``work`` and corrupt it: (input to read, corrupted file, pristine key)."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(str(spec).encode()).digest()[:8], "little"))
    kind = spec.kind.removeprefix("cli-summary-").removeprefix("cli-predict-").removesuffix("-skip")
    if kind.startswith("ccccii"):
        root = _copy(pristine["ccccii"], work)
        if kind == "ccccii-csv":
            file_name, corruption = spec.corruption.split(":")
            target, table = root / file_name, CCCCII_CSV[file_name]
        else:
            target, table, corruption = _pick(rng, _slices(root, (".png", ".jpg"))), PNG, spec.corruption
        table[corruption](rng, target)
        return root, target, "ccccii"
    if kind.startswith("mosmed"):
        root = _copy(pristine["mosmed"], work)
        if kind == "mosmed-registry":
            target, table = root / "dataset_registry.xlsx", REGISTRY
        else:
            target, table = _pick(rng, list((root / "studies").rglob("*.nii.gz"))), NIFTI
        table[spec.corruption](rng, target)
        return root, target, "mosmed"
    if kind == "covidctset-folds":
        root = _copy(pristine["covidctset-folds"], work)
        target = _pick(rng, [p for p in (root / "CSV").glob("*.csv") if len(p.read_text().splitlines()) > 1])
        FOLD_CSV[spec.corruption](rng, target)
        return root, target, "covidctset-folds"
    if kind.startswith("covidctset"):
        root = _copy(pristine["covidctset"], work)
        if kind == "covidctset-details":
            target, table = root / "Patient_details.csv", DETAILS_CSV
        else:
            target, table = _pick(rng, _slices(root, (".tif",))), TIFF
        table[spec.corruption](rng, target)
        return root, target, "covidctset"
    if kind == "checkpoint":
        target = _copy(pristine["checkpoint"], work)
        if spec.seed % 2:  # the same file under the other extension users give
            target = target.rename(target.with_suffix(".pt"))
        CHECKPOINT[spec.corruption](rng, target)
        return target, target, "checkpoint"
    source = _copy(pristine[kind], work)
    table = {"nifti": NIFTI, "dicom": DICOM, "png-folder": PNG, "tiff-folder": TIFF}[kind]
    target = source if kind == "nifti" else _pick(rng, [p for p in source.iterdir()])
    table[spec.corruption](rng, target)
    if spec.corruption == "stray_file":
        target = target.with_name("notes.txt")
    return source, target, kind


def _names(message: str, target: Path) -> bool:
    """Does an error message name the corrupted file (its path, or its name as a path or word)?"""
    return str(target) in message or any(f"{sep}{target.name}" in message for sep in ("/", " ", "'", "("))


def _call(function: Callable[[], Any]) -> tuple[str, Any]:
    """Run ``function`` in a thread with :data:`CASE_TIMEOUT`: ("value" | "error" | "hang", result)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = function()
        except BaseException as error:  # classified by the caller
            box["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(CASE_TIMEOUT)
    if thread.is_alive():
        return "hang", None
    return ("error", box["error"]) if "error" in box else ("value", box["value"])


def _classify_read(status: str, result: Any, target: Path, expected: Any) -> tuple[str, str]:
    if status == "hang":
        return "hang", ""
    if status == "error":
        message = str(result)
        if not isinstance(result, CLEAR_ERRORS):
            return "crash", f"{type(result).__name__}: {message}"
        return ("error" if _names(message, target) else "unnamed"), message
    return ("benign" if result == expected else "silent"), ""


def _cli(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue() + err.getvalue()


def _classify_cli(status: str, result: Any, target: Path, expected: str, root: Path) -> tuple[str, str]:
    if status != "value":
        return _classify_read(status, result, target, expected) if status == "hang" else ("crash", f"{type(result).__name__}: {result}")
    code, output = result
    if "Traceback" in output:
        return "crash", output
    if code != 0 or "skipped" in output:
        return ("error" if _names(output, target) else "unnamed"), output
    return ("benign" if output.replace(str(root), "<root>") == expected else "silent"), output


def run_case(spec: Spec, pristine: dict[str, Path], expected: dict[str, Any], work: Path, cli_expected: dict[str, str]) -> tuple[str, str]:
    """Corrupt, read, classify one case: (outcome, detail)."""
    work.mkdir()
    source, target, key = prepare(spec, pristine, work)
    if spec.kind.startswith("cli-summary"):
        layout = key.split("-")[0]
        argv = ["data", "summary", "--dataset", layout, "--root", str(source), "--check", "full"]
        argv += ["--skip-bad"] if spec.kind.endswith("-skip") else []
        status, result = _call(lambda: _cli(argv))
        return _classify_cli(status, result, target, cli_expected[" ".join(argv[:4] + argv[6:])], source)
    if spec.kind.startswith("cli-predict"):
        ckpt, scan = (source, pristine["nifti"]) if key == "checkpoint" else (pristine["checkpoint"], source)
        status, result = _call(lambda: _cli(["predict", "--ckpt", str(ckpt), str(scan), "--json"]))
        return _classify_cli(status, result, target, cli_expected[f"predict {key}"], scan)
    if key in ("ccccii", "mosmed", "covidctset", "covidctset-folds"):
        status, result = _call(lambda: read_dataset(key.split("-")[0], source))
    elif key == "checkpoint":
        status, result = _call(lambda: read_checkpoint_weights(source))
    else:
        status, result = _call(lambda: read_single(source))
    return _classify_read(status, result, target, expected[key])


@pytest.fixture(scope="module")
def cli_expected(pristine) -> dict[str, str]:
    """The CLI's output on the pristine inputs (dataset roots replaced by ``<root>``)."""
    out = {}
    for layout in ("ccccii", "mosmed", "covidctset"):
        for skip in ([], ["--skip-bad"]):
            argv = ["data", "summary", "--dataset", layout, "--root", str(pristine[layout]), "--check", "full", *skip]
            code, output = _cli(argv)
            assert code == 0, output
            out[" ".join(argv[:4] + argv[6:])] = output.replace(str(pristine[layout]), "<root>")
    for kind in ("nifti", "dicom", "png-folder", "tiff-folder"):
        code, output = _cli(["predict", "--ckpt", str(pristine["checkpoint"]), str(pristine[kind]), "--json"])
        assert code == 0, output
        out[f"predict {kind}"] = output.replace(str(pristine[kind]), "<root>")
    out["predict checkpoint"] = out["predict nifti"]
    return out


COUNTS: dict[str, Counter] = {}


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    total = sum(COUNTS.values(), Counter())
    lines = [f"{kind:<14} {sum(c.values()):>4} cases: " + ", ".join(f"{o} {c[o]}" for o in OUTCOMES if c[o]) for kind, c in COUNTS.items()]
    print("\nhostile input cases\n" + "\n".join(lines) + f"\n{'total':<14} {sum(total.values()):>4} cases: "
          + ", ".join(f"{o} {total[o]}" for o in OUTCOMES))


def test_enough_cases():
    assert sum(len(specs) for specs in SPECS.values()) >= 200


@pytest.mark.parametrize("group", list(SPECS))
def test_hostile_input_gets_a_clear_error(group, pristine, expected, cli_expected, tmp_path):
    counts: Counter = Counter()
    bad = []
    for number, spec in enumerate(SPECS[group]):
        outcome, detail = run_case(spec, pristine, expected, tmp_path / f"case{number}", cli_expected)
        counts[outcome] += 1
        if outcome not in ("error", "benign"):
            bad.append(f"{spec}: {outcome}: {detail[:400]}")
    COUNTS[group] = counts
    assert counts["error"] > counts["benign"], counts  # most corruptions must be caught, not shrugged off
    assert not bad, "\n".join(bad)
