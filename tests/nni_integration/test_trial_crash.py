"""Trials that die, and ``nnictl stop`` / ``nnictl resume``, on a REAL NNI manager (127.0.0.1).

* A trial whose training process is SIGKILLed while it trains (as the out-of-memory killer
  would) ends FAILED in the manager (REST API and ``load_experiment``), with the reason in the
  trial's stderr (the web UI's "View trial error"); the other trials SUCCEED. NNI 3.0 alone would
  report it USER_CANCELED with nothing in its logs: the trial's entry point supervises its training
  in a child process (``nni_covid3d.nnictl.supervise``) so it can tell.
* ``nnictl stop`` of a running experiment then ``nnictl resume ID`` finishes the remaining trials,
  and ``nni-covid3d report --experiment ID`` lists every finished trial, from before and after.
  NNI reruns the trial that was running at the stop under its own id and folder: a DNAS trial
  continues its search from its last checkpoint there.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from nni_covid3d.nnictl.run import free_port
from nni_covid3d.nnictl.supervise import WORKER_ENV
from tests.nni_integration.harness import NniExperiment, rewrite_config, start_experiment

pytestmark = pytest.mark.slow

CONFIGS = REPO_ROOT / "examples" / "nnictl"
TINY = "--size 8 32 32 --synthetic-patients 9 --batch-size 2"
GRID = {"model": {"_type": "choice", "_value": ["mc3_18"]},
        "dataset": {"_type": "choice", "_value": ["ccccii", "mosmed", "covidctset"]}}


def _start(tmp_path: Path, epochs: int, n_trials: int) -> NniExperiment:
    work_dir = tmp_path / "nni-experiments"
    config = tmp_path / "grid.yml"
    rewrite_config(CONFIGS / "baselines_grid.yml", config, work_dir, extra_trial_args=f"--epochs {epochs} {TINY}",
                   overrides={"maxTrialNumber": n_trials, "trialConcurrency": 1, "searchSpace": GRID})
    return start_experiment(config, home=tmp_path / "home", work_dir=work_dir)


def _wait_for(condition, timeout: float, what: str, experiment: NniExperiment):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        experiment.record_processes()
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}\n{experiment.logs()}")


def training_pid(supervisor: int) -> int:
    """The process that trains: the one child of the trial's supervising python process."""
    children = [int(pid) for task in Path(f"/proc/{supervisor}/task").iterdir()
                for pid in (task / "children").read_text().split()]
    assert len(children) == 1, children
    (child,) = children
    command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
    assert command[1:3] == [b"-m", b"nni_covid3d.nnictl.trial"], command
    assert f"{WORKER_ENV}=1".encode() in Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
    return child


def test_a_trial_whose_training_is_sigkilled_ends_failed_saying_why_and_the_others_succeed(tmp_path: Path) -> None:
    from nni_covid3d.nnictl.records import load_experiment

    experiment = _start(tmp_path, epochs=3, n_trials=3)
    try:
        # The first trial, once it has reported an epoch (it is training): SIGKILL its training process.
        first = _wait_for(lambda: [t for t in experiment.trials() if experiment.metrics(t["trialJobId"])],
                          240, "a first intermediate result", experiment)[0]["trialJobId"]
        (supervisor,) = experiment.trial_pids(first)
        killed = training_pid(supervisor)
        os.kill(killed, signal.SIGKILL)
        trials = experiment.wait(3, timeout=600)
        by_id = {t["trialJobId"]: t for t in trials}
        stderr = experiment.trial_file(first, "stderr")
        trial_log = experiment.trial_file(first, "trial.log")
    finally:
        experiment.stop()
    assert not experiment.leftover_processes()
    assert by_id[first]["status"] == "FAILED", by_id[first]
    assert "endTime" in by_id[first] and not by_id[first].get("finalMetricData")
    # The reason is the last line of the trial's stderr; the training's own log just stops.
    assert stderr.strip().splitlines()[-1] == (
        f"trial failed: the training process (pid {killed}) was killed by SIGKILL (signal 9); "
        "the usual cause is the out-of-memory killer or a scheduler; see dmesg / the job log"), stderr
    assert "Traceback" not in stderr
    assert "Connect to trial command channel" in trial_log and "trial result:" not in trial_log
    assert [t["status"] for t in trials if t["trialJobId"] != first] == ["SUCCEEDED", "SUCCEEDED"]
    record = load_experiment(experiment.id, experiment.work_dir)
    assert {t.id: t.status for t in record.trials} == {t["trialJobId"]: t["status"] for t in trials}
    assert {t.id for t in record.trials if t.final} == {t["trialJobId"] for t in trials if t["trialJobId"] != first}


def _resume(experiment: NniExperiment) -> NniExperiment:
    """``nnictl resume`` of the stopped ``experiment`` (checked STOPPED first); the live experiment."""
    registry = experiment.home / "nni-experiments" / ".experiment"
    assert json.loads(registry.read_text())[experiment.id]["status"] == "STOPPED"
    port = free_port()
    nnictl = Path(sys.executable).with_name("nnictl")
    done = subprocess.run([str(nnictl), "resume", experiment.id, "--port", str(port)],
                          env=experiment.env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return NniExperiment(experiment.id, port, experiment.home, experiment.work_dir,
                         int(json.loads(registry.read_text())[experiment.id]["pid"]), experiment.env)


def test_nnictl_stop_then_resume_finishes_the_trials_and_report_lists_them_all(tmp_path: Path) -> None:
    work_dir = tmp_path / "nni-experiments"
    config = tmp_path / "arch.yml"
    rewrite_config(CONFIGS / "arch_search.yml", config, work_dir, extra_trial_args=f"--epochs 1 {TINY}",
                   overrides={"maxTrialNumber": 3, "trialConcurrency": 1})
    experiment = start_experiment(config, home=tmp_path / "home", work_dir=work_dir)
    try:
        # Stop while the first trial has SUCCEEDED and the second one is training.
        _wait_for(lambda: {"SUCCEEDED", "RUNNING"} <= {t["status"] for t in experiment.trials()}
                  and any(experiment.trial_pids(t["trialJobId"]) for t in experiment.trials()), 300,
                  "a SUCCEEDED trial and a running one", experiment)
        before = {t["trialJobId"]: t["status"] for t in experiment.trials()}
    finally:
        experiment.stop()
    assert not experiment.leftover_processes()

    resumed = _resume(experiment)
    try:
        trials = resumed.wait(3, timeout=600)
    finally:
        resumed.stop()
    assert not resumed.leftover_processes()
    after = {t["trialJobId"]: t["status"] for t in trials}
    # Resume keeps the trials that had ended before the stop (not re-run), reruns the one that was
    # running under its own id (NNI stored no end for it: nni_node/core/nnimanager.js,
    # addRecoveredTrialJob), and maxTrialNumber counts them all: it starts only the remaining ones.
    assert set(before) <= set(after) and len(after) == 3, (before, after)
    assert list(after.values()) == ["SUCCEEDED"] * 3, (before, after)

    report = subprocess.run([str(Path(sys.executable).with_name("nni-covid3d")), "report", "--experiment", experiment.id],
                            env=experiment.env, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    for trial_id in after:
        assert trial_id in report.stdout


def parameters(trial: dict) -> dict:
    """The tuner parameters of a trial as the REST API lists it."""
    return json.loads(trial["hyperParameters"][0])["parameters"]


def test_a_dnas_trial_stopped_mid_search_continues_from_its_checkpoint_after_nnictl_resume(tmp_path: Path) -> None:
    epochs = 10  # long enough to be still searching when nnictl stop reaches it
    space = tmp_path / "tiny_space.json"
    space.write_text(json.dumps({"preset": "S", "n_cells": [2, 2, 2, 1, 1, 1], "head_channels": 256}))
    work_dir = tmp_path / "nni-experiments"
    config = tmp_path / "dnas.yml"
    rewrite_config(CONFIGS / "dnas_hpo.yml", config, work_dir,
                   extra_trial_args=f"--epochs {epochs} {TINY} --synthetic-patients 12 --space-config {space}",
                   overrides={"maxTrialNumber": 1, "trialConcurrency": 1})
    experiment = start_experiment(config, home=tmp_path / "home", work_dir=work_dir)
    try:
        # Stop once the first epoch is reported and checkpointed.
        (trial,) = _wait_for(lambda: [t for t in experiment.trials() if experiment.metrics(t["trialJobId"])
                                      and (Path(t["logPath"]) / "search" / "checkpoints" / "last.ckpt").is_file()],
                             300, "a first epoch reported and checkpointed", experiment)
    finally:
        experiment.stop()
    assert not experiment.leftover_processes()
    trial_dir = Path(trial["logPath"])
    assert not (trial_dir / "result.json").exists(), "the trial finished before nnictl stop reached it"

    resumed = _resume(experiment)
    try:
        trials = resumed.wait(1, timeout=600)
        stderr = resumed.trial_file(trial["trialJobId"], "stderr")
        metrics = resumed.metrics(trial["trialJobId"])
    finally:
        resumed.stop()
    assert not resumed.leftover_processes()
    # The same trial (id, parameters, folder) ran again and continued its search.
    assert [(t["trialJobId"], t["status"]) for t in trials] == [(trial["trialJobId"], "SUCCEEDED")], trials
    assert parameters(trials[0]) == parameters(trial)
    assert f"resuming the search from {trial_dir / 'search' / 'checkpoints' / 'last.ckpt'}" in stderr, stderr
    result = json.loads((trial_dir / "result.json").read_text())
    assert result["resumed"] is True and len(result["history"]) == epochs
    # Each epoch reported under its own sequence number; the checkpointed first one not again.
    sequences = [m["sequence"] for m in metrics if m["type"] == "PERIODICAL"]
    assert sorted(set(sequences)) == list(range(epochs)) and sequences.count(0) == 1, sequences
    (final,) = [json.loads(json.loads(m["data"])) for m in metrics if m["type"] == "FINAL"]
    assert final["default"] == result["history"][-1]["default"]
    assert (trial_dir / "architecture.json").is_file()
    assert not (trial_dir / "search" / "checkpoints").exists()  # removed once the trial succeeded
