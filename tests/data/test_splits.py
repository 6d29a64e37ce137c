"""Patient-level, stratified, seeded splits and their JSON formats."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from nni_covid3d.data import DataError, Scan, check_patient_disjoint, load_split, make_patient_split, save_split

NAMES = ["CP", "NCP", "Normal"]


def _scans(n_patients: int = 30) -> list[Scan]:
    scans = []
    for p in range(n_patients):
        label = p % 3
        for s in range(1 + p % 4):  # 1-4 scans per patient
            scans.append(Scan("ccccii", f"{p}", f"{p}-{s}", label, NAMES[label], (Path(f"/x/{p}/{s}/0.png"),)))
    return scans


def _patients(scans):
    return {s.patient_id for s in scans}


def test_no_patient_in_two_splits_and_all_scans_assigned():
    scans = _scans()
    split = make_patient_split(scans, val_fraction=0.2, test_fraction=0.2, seed=1)
    train, val, test = (_patients(split[k]) for k in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert sum(len(v) for v in split.values()) == len(scans)
    multi = {s.patient_id for s in scans if s.scan_id.endswith("-1")}  # patients with several scans
    for name, subset in split.items():
        for patient in multi & _patients(subset):
            assert {s.scan_id for s in scans if s.patient_id == patient} <= {s.scan_id for s in subset}
    # Stratified: each class has 10 patients -> 2 val, 2 test.
    for name in ("val", "test"):
        for label in range(3):
            assert len({s.patient_id for s in split[name] if s.label == label}) == 2


def test_split_is_seeded():
    scans = _scans()
    a = make_patient_split(scans, seed=5)
    b = make_patient_split(scans, seed=5)
    c = make_patient_split(scans, seed=6)
    assert a == b
    assert _patients(a["test"]) != _patients(c["test"])


def test_check_patient_disjoint_detects_leak():
    scans = _scans(6)
    leaky = {"train": scans[:3], "val": [], "test": [s for s in scans if s.patient_id == scans[0].patient_id]}
    with pytest.raises(ValueError, match=f"patient {scans[0].patient_id} is in both"):
        check_patient_disjoint(leaky)


def test_save_and_load_roundtrip(tmp_path):
    scans = _scans()
    split = make_patient_split(scans, seed=2)
    save_split(split, tmp_path / "split.json")
    assert load_split(tmp_path / "split.json", scans) == split
    with pytest.raises(DataError, match="split.json: lists scan"):
        load_split(tmp_path / "split.json", scans[:-3])


def test_paper_format_import(tmp_path):
    scans = _scans()
    test_patients = {"0", "1", "2", "3", "4", "5"}
    paper = {}
    for s in scans:
        if s.patient_id in test_patients:
            paper.setdefault(s.label_name, {}).setdefault(s.patient_id, {})[s.scan_id] = [p.name for p in s.paths]
    path = tmp_path / "test_split.json"
    path.write_text(json.dumps(paper))
    split = load_split(path, scans, val_fraction=0.2, seed=0)
    assert _patients(split["test"]) == test_patients
    assert len(split["test"]) == sum(1 for s in scans if s.patient_id in test_patients)
    assert split["val"] and not (_patients(split["train"]) & _patients(split["val"]))
    assert not (_patients(split["train"] + split["val"]) & test_patients)
    # A class that contradicts the dataset's label is an error naming the file.
    paper["CP"], paper["NCP"] = paper["NCP"], paper["CP"]
    path.write_text(json.dumps(paper))
    with pytest.raises(DataError, match="test_split.json: lists scan .* under class"):
        load_split(path, scans)


def test_unrecognised_split_file(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps([1, 2, 3]))
    with pytest.raises(DataError, match="s.json: unrecognised split format"):
        load_split(path, _scans())


def test_paper_train_file_carves_validation_from_listed_patients(tmp_path):
    scans = _scans()
    train_patients = {str(p) for p in range(20)}
    paper = {}
    for s in scans:
        if s.patient_id in train_patients:
            paper.setdefault(s.label_name, {}).setdefault(s.patient_id, {})[s.scan_id] = []
    path = tmp_path / "train_split.json"
    path.write_text(json.dumps(paper))
    split = load_split(path, scans, val_fraction=0.2)
    assert _patients(split["train"]) | _patients(split["val"]) == train_patients
    assert split["val"] and _patients(split["test"]) == {s.patient_id for s in scans} - train_patients
