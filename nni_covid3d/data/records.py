"""Record types shared by every dataset reader: one :class:`Scan` per CT scan, a :class:`DatasetIndex`
per dataset, and :class:`DataError` for bad input."""
from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Scan", "DatasetIndex", "DataError", "SkippedScan", "natural_key"]


class DataError(ValueError):
    """Bad input data. The message names the offending file or folder and what is wrong with it."""

    def __init__(self, path: Path | str, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class Scan:
    """One CT scan on disk.

    ``paths`` are the slice files in slice order (PNG/JPG/TIFF stacks), a single volume file (NIfTI),
    or one DICOM series folder. ``spacing`` is (z, y, x) in mm when the format stores it.
    """

    dataset: str
    patient_id: str
    scan_id: str
    label: int
    label_name: str
    paths: tuple[Path, ...]
    spacing: tuple[float, float, float] | None = None
    mask_path: Path | None = None

    @property
    def key(self) -> str:
        """A unique, stable name for the scan inside its dataset: ``<patient_id>/<scan_id>``."""
        return f"{self.patient_id}/{self.scan_id}"

    @property
    def num_slices(self) -> int | None:
        """Slice count for slice stacks; ``None`` for a volume file or DICOM folder (not read here)."""
        return len(self.paths) if len(self.paths) > 1 or _is_slice_file(self.paths[0]) else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (paths as strings)."""
        out = dataclasses.asdict(self)
        out["paths"] = [str(p) for p in self.paths]
        out["mask_path"] = str(self.mask_path) if self.mask_path else None
        out["spacing"] = list(self.spacing) if self.spacing else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Scan":
        return cls(
            dataset=data["dataset"],
            patient_id=str(data["patient_id"]),
            scan_id=str(data["scan_id"]),
            label=int(data["label"]),
            label_name=data["label_name"],
            paths=tuple(Path(p) for p in data["paths"]),
            spacing=tuple(float(s) for s in data["spacing"]) if data.get("spacing") else None,
            mask_path=Path(data["mask_path"]) if data.get("mask_path") else None,
        )


@dataclass(frozen=True)
class SkippedScan:
    """A scan left out by ``skip_bad=True``, with the reason."""

    path: Path
    reason: str

    def __str__(self) -> str:
        # Reasons usually start with the bad file inside the scan's folder, which names both.
        return self.reason if self.reason.startswith(str(self.path)) else f"{self.path}: {self.reason}"


@dataclass
class DatasetIndex:
    """The scans of one dataset, its class names (index = label) and any skipped scans."""

    name: str
    root: Path
    scans: list[Scan]
    class_names: list[str]
    skipped: list[SkippedScan] = field(default_factory=list)
    task: str | None = None
    #: Extra facts: ``slices`` (scan key -> slice count, from files or headers) and, from optional
    #: release files, e.g. CC-CCII ``lesion_slices`` (scan key -> slice names).
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scans)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per class: ``{"patients": n, "scans": n, "slices": n}`` (slices: 0 where unknown, e.g. DICOM)."""
        patients: dict[str, set[str]] = defaultdict(set)
        scans: dict[str, int] = defaultdict(int)
        slices: dict[str, int] = defaultdict(int)
        for scan in self.scans:
            patients[scan.label_name].add(scan.patient_id)
            scans[scan.label_name] += 1
            slices[scan.label_name] += self.metadata.get("slices", {}).get(scan.key, scan.num_slices or 0)
        return {
            name: {"patients": len(patients[name]), "scans": scans[name], "slices": slices[name]}
            for name in self.class_names
        }

    def summary(self) -> str:
        """A printable table: patients / scans / slices per class, plus skipped scans."""
        counts = self.counts()
        lines = [f"dataset {self.name} at {self.root}" + (f" (task {self.task})" if self.task else "")]
        lines.append(f"{'class':<12}{'label':>6}{'patients':>10}{'scans':>8}{'slices':>9}")
        for label, name in enumerate(self.class_names):
            c = counts[name]
            slices = str(c["slices"]) if c["slices"] else "-"
            lines.append(f"{name:<12}{label:>6}{c['patients']:>10}{c['scans']:>8}{slices:>9}")
        total_patients = len({(s.label_name, s.patient_id) for s in self.scans})
        total_slices = sum(c["slices"] for c in counts.values())
        lines.append(f"{'total':<12}{'':>6}{total_patients:>10}{len(self.scans):>8}{total_slices or '-':>9}")
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} bad scan(s):")
            lines.extend(f"  {s}" for s in self.skipped)
        return "\n".join(lines)


_SLICE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def _is_slice_file(path: Path) -> bool:
    return path.suffix.lower() in _SLICE_SUFFIXES


def natural_key(path: Path | str) -> tuple:
    """Sort key that orders ``2.png`` before ``10.png`` (numbers compared as numbers)."""
    name = Path(path).name
    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name))
