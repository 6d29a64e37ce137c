"""Readers on phantoms written in the real layouts: labels, counts, slice order, masks."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from nni_covid3d.data import DataError, load_dataset, read_mask, read_scan
from nni_covid3d.data.covidctset import read_fold_split


def test_ccccii_index_matches_files_written(ccccii_root):
    index = load_dataset("ccccii", ccccii_root)
    assert index.class_names == ["CP", "NCP", "Normal"]
    with (ccccii_root / "unzip_filenames.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(index.scans) == len(rows)
    by_key = {(r["patient_id"], r["scan_id"]): r for r in rows}
    for scan in index.scans:
        row = by_key[(scan.patient_id, scan.scan_id)]
        assert scan.label_name == row["label"] and index.class_names[scan.label] == row["label"]
        assert len(scan.paths) == int(row["n_slice"])
        assert scan.paths[0].parent.parent.parent.name == scan.label_name
    counts = index.counts()
    assert sum(c["patients"] for c in counts.values()) == 9
    assert all(c["patients"] == 3 for c in counts.values())
    assert "patients" in index.summary() and "NCP" in index.summary()
    lesion_slices = index.metadata["lesion_slices"]
    assert lesion_slices
    for scan in index.scans:
        names = {p.name for p in scan.paths}
        assert (scan.key in lesion_slices) == (scan.label_name != "Normal")
        assert set(lesion_slices.get(scan.key, [])) <= names


def test_ccccii_slices_in_natural_order_and_jpgs_read(ccccii_root):
    index = load_dataset("ccccii", ccccii_root)
    unpadded = [s for s in index.scans if s.paths[0].stem == "0"]
    assert unpadded, "the generator writes some scans with unpadded slice names"
    for scan in unpadded:
        numbers = [int(p.stem) for p in scan.paths]
        assert numbers == list(range(len(numbers)))  # 2 before 10: natural, not lexical
    suffixes = {p.suffix for s in index.scans for p in s.paths}
    assert suffixes == {".png", ".jpg"}
    jpg_scan = next(s for s in index.scans if s.paths[0].suffix == ".jpg")
    volume, kind = read_scan(jpg_scan.paths)
    assert kind == "gray8" and volume.shape[0] == len(jpg_scan.paths) and 0 <= volume.min() <= volume.max() <= 255


def test_ccccii_masks_mark_lesions_of_disease_classes_only(ccccii_root):
    index = load_dataset("ccccii", ccccii_root)
    for scan in index.scans:
        assert (scan.mask_path is not None) == (scan.label_name != "Normal")
    scan = next(s for s in index.scans if s.label_name == "NCP")
    volume, _ = read_scan(scan.paths)
    mask = read_mask(scan.mask_path)
    assert mask.shape == volume.shape and mask.sum() > 0
    lung = (volume > 40) & (volume < 110) & (mask == 0)  # lung parenchyma in the 8-bit lung window
    assert volume[mask > 0].mean() > volume[lung].mean() + 30  # GGO brighter than lung: aligned


def test_mosmed_binary_and_severity_labels(mosmed_root):
    binary = load_dataset("mosmed", mosmed_root)
    severity = load_dataset("mosmed", mosmed_root, task="severity")
    assert binary.class_names == ["Normal", "NCP"]
    assert severity.class_names == [f"CT-{k}" for k in range(5)]
    grades = {s.scan_id: s.label for s in severity.scans}
    assert set(grades.values()) == {0, 1, 2, 3, 4}
    for scan in binary.scans:
        assert scan.paths[0].parent.name == f"CT-{grades[scan.scan_id]}"
        assert scan.label == int(grades[scan.scan_id] > 0)
        assert scan.patient_id == scan.scan_id  # one study per patient
        assert scan.spacing is not None and 7.5 <= scan.spacing[0] <= 10.0  # ~8 mm slices, from the affine


def test_mosmed_volume_is_axial_and_severity_tracks_involvement(mosmed_root):
    index = load_dataset("mosmed", mosmed_root, task="severity")
    fractions = {}
    total_slices = 0
    for scan in index.scans:
        volume, kind = read_scan(scan.paths)
        assert kind == "hu" and volume.shape[1:] == (48, 48) and 8 <= volume.shape[0] <= 14  # D = slices, not sagittal
        total_slices += volume.shape[0]
        if scan.mask_path is None:
            assert scan.label == 0
            continue
        mask = read_mask(scan.mask_path)
        inner = (slice(None), slice(12, 36), slice(5, 43))  # inside the body: excludes the air around it
        volume, mask = volume[inner], mask[inner]
        lungs = (volume < -650) | (mask > 0)
        fractions.setdefault(scan.label, []).append(mask.sum() / lungs.sum())
    assert sum(c["slices"] for c in index.counts().values()) == total_slices  # from the headers
    means = [np.mean(fractions[g]) for g in sorted(fractions)]
    # CT-1 marks the least of the lungs as lesion; CT-2..CT-4 mark at least twice as much. (One or two
    # scans per grade here; the shape phantoms give every grade the same amount of lesion-dense tissue,
    # so beyond CT-2 the grades differ in how much of it forms disease-shaped lesions, not in volume.)
    assert means[0] == min(means) and min(means[1:]) > 2 * means[0], means


def test_mosmed_registry_contradiction_is_an_error(mosmed_root, tmp_path):
    root = tmp_path / "mm"
    shutil.copytree(mosmed_root, root)
    study = next((root / "studies" / "CT-0").iterdir())
    study.rename(root / "studies" / "CT-1" / study.name)
    with pytest.raises(DataError, match=f"{study.name}.*dataset_registry.xlsx says CT-0"):
        load_dataset("mosmed", root)


def test_covidctset_raw_scans_are_patient_series_with_csv_labels(covidctset_root, tmp_path):
    index = load_dataset("covidctset", covidctset_root)
    assert index.class_names == ["Normal", "COVID"]
    for scan in index.scans:
        group, patient = scan.patient_id.split("/")
        assert scan.scan_id.startswith("SR_") and scan.paths[0].parent.name == scan.scan_id
        assert scan.label == int(group.startswith("covid"))
    assert any(len([s for s in index.scans if s.patient_id == p]) > 1 for p in {s.patient_id for s in index.scans})
    volume, kind = read_scan(index.scans[0].paths)
    assert kind == "hu" and volume.min() >= -1024 and volume.min() < -900  # raw - 1024 = HU: air near -1000
    # Labels come from Patient_details.csv, not the folder name: flip one patient's class there.
    root = tmp_path / "ct"
    shutil.copytree(covidctset_root, root)
    details = (root / "Patient_details.csv").read_text().splitlines()
    first = details[1].split(",")
    first[2] = "covid" if first[2] == "normal" else "normal"
    details[1] = ",".join(first)
    (root / "Patient_details.csv").write_text("\n".join(details) + "\n")
    flipped = {s.key: s.label for s in load_dataset("covidctset", root).scans}
    original = {s.key: s.label for s in index.scans}
    changed = [k for k in original if original[k] != flipped[k]]
    assert changed and all(k.startswith(f"{first[1]}/{first[0]}/") for k in changed)


def test_covidctset_fold_layout_and_fold_split(covidctset_folds_root):
    index = load_dataset("covidctset", covidctset_folds_root)
    assert len(index.scans) >= 10 and {s.label for s in index.scans} == {0, 1}
    for scan in index.scans:
        assert all(p.parent.name == "images" for p in scan.paths)
        assert all(p.name.startswith(scan.patient_id.replace("/", "_") + f"_{scan.scan_id}_") for p in scan.paths)
    for fold in (1, 5):
        split = read_fold_split(index, fold)
        assert sum(len(v) for v in split.values()) == len(index.scans)
        patients = [{s.patient_id for s in split[k]} for k in ("train", "val", "test")]
        assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
