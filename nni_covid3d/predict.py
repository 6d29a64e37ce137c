"""Prediction on new scans with a trained checkpoint: class probabilities, optional CAM files,
and batch mode over a folder of scans (CSV).

An input is a NIfTI file, a DICOM series folder, or a folder of PNG/JPG/TIFF slices; a folder of
such scans (NIfTI files and/or scan folders) is a batch. The checkpoint's stored preprocessing is
applied, so predictions match evaluation.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from nni_covid3d.data.io import (
    PNG_SUFFIXES,
    TIFF_SUFFIXES,
    check_dicom_series,
    describe_error,
    is_dicom_file,
    is_nifti,
    require_regular_file,
)
from nni_covid3d.data.records import DataError
from nni_covid3d.precision import DEFAULT_PRECISION, check_precision, inference_autocast

__all__ = ["Prediction", "Predictor", "is_batch_folder", "list_batch_inputs", "check_dicom_series", "write_csv"]

SLICE_SUFFIXES = PNG_SUFFIXES + TIFF_SUFFIXES


def _visible_entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def is_batch_folder(folder: Path) -> bool:
    """A folder of scans (NIfTI files or sub-folders), as opposed to one scan's slice / DICOM folder."""
    entries = _visible_entries(folder)
    if any(p.suffix.lower() in SLICE_SUFFIXES or is_dicom_file(p) for p in entries):
        return False
    return any(is_nifti(p) or p.is_dir() for p in entries)


def list_batch_inputs(folder: Path) -> list[Path]:
    """The scans of a batch folder, sorted: every visible entry (NIfTI files, scan folders, and anything
    else, which then fails with its reason rather than being left out)."""
    inputs = _visible_entries(folder)
    if not inputs:
        raise DataError(folder, "contains no scans (NIfTI files, DICOM series or slice folders)")
    return inputs


def load_input(path: Path) -> Any:
    """The :class:`~nni_covid3d.data.Scan` for a NIfTI file, DICOM series folder or slice folder.

    On top of :func:`nni_covid3d.data.load_single_scan`'s checks (empty folder, stray files, slices
    of mixed sizes, non-3D NIfTI, DICOM series that are not CT or mix series or slice sizes), refuses
    a lone 2D image or single-slice folder, naming the offending file.
    """
    from nni_covid3d.data import load_single_scan

    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise FileNotFoundError(f"input {path} does not exist")
    if path.suffix.lower() in SLICE_SUFFIXES and not path.is_dir():
        require_regular_file(path)
        raise DataError(path, "is a single 2D image; give the folder holding all slices of the scan")
    scan = load_single_scan(path)
    if scan.paths[0].is_dir():
        dicoms = [p for p in _visible_entries(scan.paths[0]) if is_dicom_file(p)]
        if len(dicoms) == 1:
            raise DataError(dicoms[0], "is a single 2D DICOM image, not a CT series")
    elif len(scan.paths) == 1 and not is_nifti(scan.paths[0]):
        raise DataError(scan.paths[0], "is the only slice in its folder: a 2D image, not a 3D scan")
    return scan


@dataclass
class Prediction:
    """Class probabilities of one input (and the CAM files written for it, if any)."""

    input: str
    class_names: list[str]
    probabilities: list[float]
    cam_files: dict[str, str] = field(default_factory=dict)

    @property
    def predicted(self) -> str:
        return self.class_names[int(np.argmax(self.probabilities))]

    def to_dict(self) -> dict[str, Any]:
        out = {
            "input": self.input,
            "predicted": self.predicted,
            "probabilities": {n: round(float(p), 6) for n, p in zip(self.class_names, self.probabilities)},
        }
        if self.cam_files:
            out["cam"] = self.cam_files
        return out


class Predictor:
    """A checkpoint's model with its preprocessing, ready to classify scans on disk.

    Args:
        ckpt: an nni-covid3d checkpoint (read with ``weights_only=True``; other files are refused).
        cam_method, cam_layer: used when a CAM folder is asked for (see
            :class:`~nni_covid3d.explain.CamExplainer`).
        precision: the forward passes' autocast on the CPU, ``32-true`` (default) or ``bf16-mixed``
            (:func:`nni_covid3d.precision.inference_autocast`); the probabilities are fp32.
    """

    def __init__(self, ckpt: str | Path, *, cam_method: str = "gradcam", cam_layer: str | None = None,
                 precision: str = DEFAULT_PRECISION) -> None:
        from nni_covid3d.data import Preprocessing
        from nni_covid3d.training import load_model

        self.model, self.meta = load_model(ckpt)
        if not self.meta.get("preprocessing"):
            raise DataError(Path(ckpt), "checkpoint stores no preprocessing settings")
        try:
            self.preprocessing = Preprocessing.from_dict(self.meta["preprocessing"])
        except (TypeError, ValueError) as error:
            raise DataError(Path(ckpt), f"bad preprocessing settings in the checkpoint ({describe_error(error)})") from None
        self.class_names = list(self.meta["class_names"])
        self.cam_method = cam_method
        self.cam_layer = cam_layer
        self.precision = check_precision(precision, "cpu")  # the model stays on the CPU
        self._explainer = None

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        p = self.preprocessing
        return (int(self.meta.get("in_channels", 1)), p.depth, p.height, p.width)

    def explainer(self):
        if self._explainer is None:
            from nni_covid3d.explain import CamExplainer

            self._explainer = CamExplainer(self.model, self.input_shape, method=self.cam_method,
                                           target_layer=self.cam_layer, precision=self.precision)
        return self._explainer

    def predict(self, path: str | Path, cam_dir: Path | None = None) -> Prediction:
        """Classify one scan; with ``cam_dir``, also write its CAM files there (predicted class)."""
        scan = load_input(Path(path))
        if cam_dir is not None:
            from nni_covid3d.explain.pipeline import explain_scan, write_scan_cam

            result = explain_scan(self.explainer(), scan, self.preprocessing)
            files = write_scan_cam(result, Path(cam_dir), self.class_names)
            return Prediction(str(path), self.class_names, result.cam.probabilities.tolist(), files)
        from nni_covid3d.data import preprocess_single

        image = preprocess_single(scan, self.preprocessing)
        with torch.no_grad(), inference_autocast(self.precision, "cpu"):
            logits = self.model(image[None].float())
        probabilities = torch.softmax(logits.float(), dim=1)[0]
        return Prediction(str(path), self.class_names, probabilities.tolist())

    def predict_batch(self, folder: Path, cam_dir: Path | None = None) -> tuple[list[Prediction], list[tuple[Path, str]]]:
        """Classify every scan of a batch folder. A bad scan does not stop the batch: it is returned
        in the second list with its error message (and goes into the CSV's ``error`` column)."""
        predictions, failures = [], []
        for path in list_batch_inputs(Path(folder)):
            try:
                sub = None if cam_dir is None else Path(cam_dir) / path.name.replace(".nii.gz", "").replace(".nii", "")
                predictions.append(self.predict(path, sub))
            except (DataError, FileNotFoundError, ValueError) as error:
                failures.append((path, str(error)))
        return predictions, failures


def write_csv(path: Path, class_names: Sequence[str], predictions: Sequence[Prediction], failures: Sequence[tuple[Path, str]] = ()) -> Path:
    """Batch results as CSV: ``input, predicted, p_<class>..., error`` (one row per scan, failures too)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["input", "predicted", *[f"p_{n}" for n in class_names], "error"])
        for p in predictions:
            writer.writerow([p.input, p.predicted, *[f"{v:.6f}" for v in p.probabilities], ""])
        for source, message in failures:
            writer.writerow([str(source), "", *[""] * len(class_names), message])
    return path


def format_prediction(prediction: Prediction) -> str:
    """Human-readable lines: the predicted class and each class's probability."""
    lines = [f"{prediction.input}: {prediction.predicted}"]
    lines += [f"  {n:<10} {p:.4f}" for n, p in zip(prediction.class_names, prediction.probabilities)]
    if prediction.cam_files:
        lines.append(f"  CAM files in {Path(prediction.cam_files['montage']).parent}")
    return "\n".join(lines)


def to_json(predictions: Prediction | Sequence[Prediction]) -> str:
    """One prediction as a JSON object, a batch as a JSON list."""
    if isinstance(predictions, Prediction):
        return json.dumps(predictions.to_dict(), indent=2)
    return json.dumps([p.to_dict() for p in predictions], indent=2)
