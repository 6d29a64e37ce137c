"""CAMs for scans on disk: explain one scan and write its files, score a model's maps against lesion
masks, write overlays for a few test scans.

The heatmap is computed on the model's input grid (the checkpoint's preprocessing: depth x height x
width) and resized back to the scan's own axial volume grid before it is written or scored, so the
NIfTI heatmap overlays the source scan voxel for voxel.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from nni_covid3d.explain.cam import OCCLUSION_BOX, CamExplainer, CamMap
from nni_covid3d.explain.outputs import (
    resize_map,
    save_heatmap_nifti,
    save_montage,
    save_slice_relevance,
    slice_affine,
    slice_relevance,
)
from nni_covid3d.explain.scoring import chance_hit_rate, energy_share, mask_fraction, pointing_game
from nni_covid3d.precision import DEFAULT_PRECISION

__all__ = [
    "ScanCam",
    "explain_scan",
    "write_scan_cam",
    "score_cams",
    "write_cam_overlays",
    "lesion_labels",
]

@dataclass
class ScanCam:
    """A CAM resized to the scan's axial volume grid, with what is needed to write and score it."""

    scan: Any  # nni_covid3d.data.Scan
    cam: CamMap  # the map on the model's input grid
    heatmap: np.ndarray  # (D0, H0, W0) on the scan's axial grid, [0, 1]
    volume: np.ndarray  # (D0, H0, W0) the decoded scan (HU or 8-bit gray)
    kind: str  # "hu" or "gray8"
    files: dict[str, str] = field(default_factory=dict)


def scan_name(scan: Any) -> str:
    """A file-system-safe name for a scan: ``<patient>_<scan>`` (``<patient>`` when they are equal)."""
    patient, scan_id = getattr(scan, "patient_id", ""), getattr(scan, "scan_id", "")
    raw = (patient if scan_id in ("", patient) else f"{patient}_{scan_id}") if patient else Path(scan.paths[0]).name
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in raw)


def explain_scan(
    explainer: CamExplainer, scan: Any, preprocessing: Any, class_idx: int | None = None
) -> ScanCam:
    """Compute the CAM of one scan (``class_idx=None``: the predicted class) on its own volume grid."""
    from nni_covid3d.data import preprocess_single
    from nni_covid3d.data.io import read_scan

    image = preprocess_single(scan, preprocessing)
    cam = explainer(image, class_idx=class_idx)
    volume, kind = read_scan(scan.paths)
    heatmap = np.clip(resize_map(cam.heatmap, volume.shape), 0.0, 1.0)
    return ScanCam(scan=scan, cam=cam, heatmap=heatmap, volume=volume, kind=kind)


def _heatmap_geometry(scan: Any) -> dict[str, Any]:
    """How to place the heatmap in world space: the source NIfTI itself, the DICOM series' oriented
    affine, or (slice stacks) an affine built from the spacing."""
    from nni_covid3d.data.io import is_nifti

    first = Path(scan.paths[0])
    if len(scan.paths) == 1 and is_nifti(first):
        return {"source_nifti": first}
    if len(scan.paths) == 1 and first.is_dir():
        from monai.transforms import LoadImage, Orientation

        from nni_covid3d.explain.outputs import AXIAL_AXCODES

        image = LoadImage(reader="PydicomReader", image_only=True, ensure_channel_first=True)(str(first))
        return {"affine": np.asarray(Orientation(axcodes=AXIAL_AXCODES)(image).affine, dtype=np.float64)}
    return {"affine": slice_affine(scan.spacing)}


def write_scan_cam(
    result: ScanCam,
    out_dir: Path,
    class_names: Sequence[str],
    *,
    mask: np.ndarray | None = None,
    n_slices: int = 12,
) -> dict[str, str]:
    """Write ``heatmap.nii.gz``, ``montage.png``, ``slice_relevance.png/.csv`` and ``cam.json`` into
    ``out_dir``; for slice stacks also ``volume.nii.gz`` (the stack with the same affine, to overlay
    the heatmap on). Returns the written paths by kind."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cam = result.cam
    label = class_names[cam.class_idx] if cam.class_idx < len(class_names) else str(cam.class_idx)
    title = f"{scan_name(result.scan)}: {cam.method} for {label} (p={cam.probabilities[cam.class_idx]:.2f}), layer {cam.layer}"
    geometry = _heatmap_geometry(result.scan)
    files = {"heatmap": str(save_heatmap_nifti(result.heatmap, out_dir / "heatmap.nii.gz", **geometry))}
    if "affine" in geometry and "source_nifti" not in geometry and len(result.scan.paths) > 1:
        files["volume"] = str(save_heatmap_nifti(result.volume, out_dir / "volume.nii.gz", affine=geometry["affine"]))
    save_montage(result.volume, result.heatmap, out_dir / "montage.png", kind=result.kind, mask=mask, n_slices=n_slices, title=title)
    files["montage"] = str(out_dir / "montage.png")
    relevance = slice_relevance(result.heatmap)
    save_slice_relevance(relevance, out_dir / "slice_relevance.png", out_dir / "slice_relevance.csv", title=title)
    files["slice_relevance_png"] = str(out_dir / "slice_relevance.png")
    files["slice_relevance_csv"] = str(out_dir / "slice_relevance.csv")
    summary = {
        "scan": [str(p) for p in result.scan.paths],
        "method": cam.method,
        "layer": cam.layer,
        "feature_shape": list(cam.feature_shape),
        "explained_class": label,
        "probabilities": {name: float(p) for name, p in zip(class_names, cam.probabilities)},
        "volume_shape": list(result.volume.shape),
        "model_input_shape": list(cam.heatmap.shape),
        "slice_relevance": [round(float(v), 6) for v in relevance],
        "files": files,
    }
    (out_dir / "cam.json").write_text(json.dumps(summary, indent=2))
    files["summary"] = str(out_dir / "cam.json")
    result.files = files
    return files


def lesion_labels(class_names: Sequence[str]) -> list[int]:
    """Labels of the lesion-bearing (COVID) classes: ``NCP`` (CC-CCII, MosMed binary), ``COVID``
    (COVID-CTset), or ``CT-1``..``CT-4`` (MosMed severity)."""
    from nni_covid3d.data.classes import COVID_NAMES, covid_class_index

    names = list(class_names)
    covid = covid_class_index(names)
    if covid is not None:
        return [covid]
    severity = [i for i, n in enumerate(names) if n.startswith("CT-") and n != "CT-0"]
    if severity:
        return severity
    raise ValueError(f"no COVID class among {names} (expected one of {COVID_NAMES} or CT-1..CT-4)")


def _load(ckpt: Any) -> tuple[nn.Module, dict[str, Any]]:
    """A model and its metadata from a checkpoint path, or ``(model, meta)`` passed through."""
    if isinstance(ckpt, (str, Path)):
        from nni_covid3d.training import load_model

        return load_model(ckpt)
    model, meta = ckpt
    return model.eval(), meta


def _preprocessing(meta: dict[str, Any], preprocessing: Any | None) -> Any:
    from nni_covid3d.data import Preprocessing

    if preprocessing is None:
        preprocessing = meta["preprocessing"]
    return Preprocessing.from_dict(preprocessing) if isinstance(preprocessing, dict) else preprocessing


def _input_shape(meta: dict[str, Any], preprocessing: Any) -> tuple[int, int, int, int]:
    return (int(meta.get("in_channels", 1)), preprocessing.depth, preprocessing.height, preprocessing.width)


def score_cams(
    ckpt: str | Path | tuple[nn.Module, dict[str, Any]],
    scans: Iterable[Any],
    preprocessing: Any | None = None,
    out_dir: Path | None = None,
    *,
    methods: Sequence[str] = ("gradcam",),
    target_layer: str | None = None,
    tolerance_mm: float = 0.0,
    n_overlays: int = 0,
    occlusion_box: Sequence[float] = OCCLUSION_BOX,
    precision: str = DEFAULT_PRECISION,
) -> dict[str, Any]:
    """Score a model's CAMs against lesion masks on its COVID scans (those with a ``mask_path``).

    Each map explains the scan's true class (a COVID class), whatever the model predicted, and is
    scored on the scan's own volume grid:

    - ``hit_rate``: pointing game, share of scans whose heatmap maximum lies inside the lesion
      (within ``tolerance_mm`` of it when > 0), with ``hit_rate_strict`` (no tolerance) and two
      controls: ``chance_hit_rate`` (a uniformly random point) and ``shuffled_hit_rate`` (each scan
      scored with the next scan's map: a map that always points at the same place, e.g. the centre
      of the lungs, scores as well there as on its own scan);
    - ``energy_share``: mean share of heatmap mass inside the lesion, beside ``chance_energy`` (the
      mean lesion volume fraction, what a uniform map scores).

    ``ckpt`` is a checkpoint path or a ``(model, meta)`` pair; ``preprocessing`` defaults to the
    checkpoint's; ``occlusion_box`` sizes the ``"occlusion"`` method's box and ``precision`` sets the
    passes' autocast (see :class:`~nni_covid3d.explain.cam.CamExplainer`). With ``out_dir``, writes ``cam_scores.json`` and per-scan rows
    ``cam_scores.csv`` there, and overlays for the first ``n_overlays`` scans. Returns
    ``{method: {...metrics..., "per_scan": [...]}}`` plus ``"model"`` and ``"layer"`` entries.
    """
    from nni_covid3d.data.io import read_mask

    model, meta = _load(ckpt)
    preprocessing = _preprocessing(meta, preprocessing)
    class_names = list(meta["class_names"])
    positive = lesion_labels(class_names)
    scored = [s for s in scans if getattr(s, "mask_path", None) is not None and s.label in positive]
    if not scored:
        raise ValueError(f"no {'/'.join(class_names[i] for i in positive)} scans with a lesion mask to score CAMs on")
    report: dict[str, Any] = {"model": meta.get("model_name"), "tolerance_mm": tolerance_mm, "n_scans": len(scored)}
    input_shape = _input_shape(meta, preprocessing)
    for method in methods:
        torch.manual_seed(0)
        explainer = CamExplainer(model, input_shape, method=method, target_layer=target_layer,
                                 occlusion_box=occlusion_box, precision=precision)
        rows, model_grid_maps, masks = [], [], []
        for index, scan in enumerate(scored):
            result = explain_scan(explainer, scan, preprocessing, class_idx=scan.label)
            model_grid_maps.append(result.cam.heatmap)
            mask = read_mask(scan.mask_path)
            masks.append(mask)
            if mask.shape != result.heatmap.shape:
                raise ValueError(f"{scan.mask_path}: mask shape {mask.shape} differs from the scan's {result.heatmap.shape}")
            if not mask.any():
                raise ValueError(f"{scan.mask_path}: empty lesion mask for a {class_names[scan.label]} scan")
            rows.append(
                {
                    "scan": scan_name(scan),
                    "hit": pointing_game(result.heatmap, mask, tolerance_mm=tolerance_mm, spacing=scan.spacing),
                    "hit_strict": pointing_game(result.heatmap, mask),
                    "chance_hit": chance_hit_rate(mask, tolerance_mm, scan.spacing),
                    "energy_share": energy_share(result.heatmap, mask),
                    "mask_fraction": mask_fraction(mask),
                    "p_true": float(result.cam.probabilities[scan.label]),
                    "predicted": class_names[int(np.argmax(result.cam.probabilities))],
                }
            )
            if out_dir is not None and index < n_overlays:
                write_scan_cam(result, Path(out_dir) / method / scan_name(scan), class_names, mask=mask)
        for index, (scan, mask) in enumerate(zip(scored, masks)):  # control: the next scan's map on this scan's lesions
            other = resize_map(model_grid_maps[(index + 1) % len(scored)], mask.shape)
            rows[index]["shuffled_hit"] = len(scored) > 1 and pointing_game(other, mask, tolerance_mm=tolerance_mm, spacing=scan.spacing)
        report["layer"] = explainer.layer
        report["feature_shape"] = list(explainer.feature_shape)
        report[method] = {
            "hit_rate": float(np.mean([r["hit"] for r in rows])),
            "hit_rate_strict": float(np.mean([r["hit_strict"] for r in rows])),
            "chance_hit_rate": float(np.mean([r["chance_hit"] for r in rows])),
            "shuffled_hit_rate": float(np.mean([r["shuffled_hit"] for r in rows])),
            "energy_share": float(np.mean([r["energy_share"] for r in rows])),
            "chance_energy": float(np.mean([r["mask_fraction"] for r in rows])),
            "layer": explainer.layer,
            "feature_shape": list(explainer.feature_shape),
            "per_scan": rows,
        }
    if out_dir is not None:
        _write_scores(report, Path(out_dir), methods)
    return report


def _write_scores(report: dict[str, Any], out_dir: Path, methods: Sequence[str]) -> None:
    import csv

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "cam_scores.json").write_text(json.dumps(report, indent=2))
    with open(out_dir / "cam_scores.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "scan", "hit", "hit_strict", "shuffled_hit", "chance_hit", "energy_share",
                         "mask_fraction", "p_true", "predicted"])
        for method in methods:
            for row in report[method]["per_scan"]:
                writer.writerow([method, row["scan"], int(row["hit"]), int(row["hit_strict"]), int(row["shuffled_hit"]),
                                 f"{row['chance_hit']:.4f}", f"{row['energy_share']:.4f}",
                                 f"{row['mask_fraction']:.4f}", f"{row['p_true']:.4f}", row["predicted"]])


def write_cam_overlays(
    ckpt: str | Path | tuple[nn.Module, dict[str, Any]],
    scans: Sequence[Any],
    out_dir: Path,
    n: int = 3,
    *,
    method: str = "gradcam",
    target_layer: str | None = None,
    preprocessing: Any | None = None,
) -> list[Path]:
    """Write CAM files (NIfTI heatmap, montage, slice relevance) for the first ``n`` scans, each
    explaining the model's predicted class, into ``out_dir/<patient>_<scan>/``; lesion masks, when
    the scans have them, are outlined in the montage. Returns the folders written."""
    from nni_covid3d.data.io import read_mask

    model, meta = _load(ckpt)
    preprocessing = _preprocessing(meta, preprocessing)
    explainer = CamExplainer(model, _input_shape(meta, preprocessing), method=method, target_layer=target_layer)
    folders = []
    for scan in list(scans)[:n]:
        result = explain_scan(explainer, scan, preprocessing)
        mask = read_mask(scan.mask_path) if getattr(scan, "mask_path", None) else None
        folder = Path(out_dir) / scan_name(scan)
        write_scan_cam(result, folder, meta["class_names"], mask=mask)
        folders.append(folder)
    return folders
