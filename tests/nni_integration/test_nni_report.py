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


def _experiment_db(folder: Path, events: list[tuple], metrics: list[tuple]) -> Path:
    """An experiment folder whose database has NNI 3.0's tables (columns as its manager creates them)."""
    import json
    import sqlite3

    (folder / "db").mkdir(parents=True)
    connection = sqlite3.connect(folder / "db" / "nni.sqlite")
    connection.execute("CREATE TABLE TrialJobEvent (timestamp integer, trialJobId text, event text, data text, "
                       "logPath text, sequenceId integer, message text, environmentId text)")
    connection.execute("CREATE TABLE MetricData (timestamp integer, trialJobId text, parameterId text, type text, "
                       "sequence integer, data text)")
    connection.execute("CREATE TABLE ExperimentProfile (params text, id text, execDuration integer, startTime integer, "
                       "endTime integer, logDir text, nextSequenceId integer, revision integer)")
    connection.execute("INSERT INTO ExperimentProfile VALUES (?, 'exp', 0, 0, 0, '', 2, 1)",
                       (json.dumps({"trialCommand": "python -m nni_covid3d.trial dnas"}),))
    connection.executemany("INSERT INTO TrialJobEvent VALUES (?, ?, ?, ?, NULL, ?, NULL, NULL)", events)
    connection.executemany("INSERT INTO MetricData VALUES (?, ?, ?, ?, 0, ?)", metrics)
    connection.commit()
    connection.close()
    return folder


def test_parameters_follow_the_metrics_parameter_id(tmp_path: Path) -> None:
    """Two trials whose events recorded each other's parameters: the metrics say which ones each trained."""
    import json

    from nni_covid3d.nnictl.records import load_experiment

    def event(trial: str, parameter_id: int, tau: float, time: int, sequence: int) -> tuple:
        data = json.dumps({"parameter_id": parameter_id, "parameters": {"tau_init": tau}})
        return (time, trial, "RUNNING", data, sequence)

    def final(trial: str, parameter_id: int, value: float, time: int) -> tuple:
        return (time, trial, str(parameter_id), "FINAL", json.dumps(json.dumps({"default": value})))

    events = [event("A", 1, 7.0, 1, 0), event("B", 0, 2.0, 2, 1),
              (5, "A", "SUCCEEDED", None, 0), (6, "B", "SUCCEEDED", None, 1)]
    metrics = [final("A", 0, 0.9, 3), final("B", 1, 0.4, 4)]
    record = load_experiment("exp", _experiment_db(tmp_path / "exp", events, metrics).parent)
    trained = {trial.id: (trial.parameters, trial.final["default"]) for trial in record.trials}
    assert trained == {"A": ({"tau_init": 2.0}, 0.9), "B": ({"tau_init": 7.0}, 0.4)}
