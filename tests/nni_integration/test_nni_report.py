"""Experiment records: metric decoding, best-trial choice, experiment lookup errors."""
from __future__ import annotations

from pathlib import Path

import pytest

from nni_covid3d.nnictl.records import (
    ExperimentNotFound,
    ExperimentRecord,
    TrialRecord,
    _decode_metric,
    best_trial,
    find_experiment_dir,
)


def record(mode: str, *finals: tuple[str, float | None]) -> ExperimentRecord:
    trials = [TrialRecord(f"t{i}", i, status, {}, None, None if value is None else {"default": value})
              for i, (status, value) in enumerate(finals)]
    config = {"tuner": {"name": "TPE", "classArgs": {"optimize_mode": mode}},
              "trialCommand": "python -m nni_covid3d.trial dnas --epochs 3"}
    return ExperimentRecord("exp", Path("."), config, trials)


def test_metrics_are_decoded_as_the_manager_stores_them() -> None:
    assert _decode_metric('"{\\"default\\": 0.5, \\"size_mb\\": 1.0}"') == {"default": 0.5, "size_mb": 1.0}
    assert _decode_metric('"0.25"') == 0.25


def test_best_trial_follows_the_tuner_direction_and_skips_failures() -> None:
    finals = [("SUCCEEDED", 0.6), ("FAILED", None), ("SUCCEEDED", 0.8), ("SUCCEEDED", 0.8), ("USER_CANCELED", None)]
    assert best_trial(record("maximize", *finals)).id == "t2"  # ties go to the earlier trial
    assert best_trial(record("minimize", *finals)).id == "t0"
    assert record("maximize").trial_mode == "dnas"


def test_no_succeeded_trial_is_an_error_listing_the_states() -> None:
    with pytest.raises(ValueError, match="t0: FAILED"):
        best_trial(record("maximize", ("FAILED", None)))


def test_unknown_experiment_names_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ExperimentNotFound, match="nope.*--experiment-dir") as error:
        find_experiment_dir("nope", tmp_path / "exps")
    assert str(tmp_path / "exps" / "nope") in str(error.value)
    (tmp_path / "exps" / "nope" / "db").mkdir(parents=True)
    (tmp_path / "exps" / "nope" / "db" / "nni.sqlite").write_bytes(b"")
    assert find_experiment_dir("nope", tmp_path / "exps") == tmp_path / "exps" / "nope"
