"""The nnictl configs in examples/nnictl/ run through a REAL NNI manager on 127.0.0.1.

Each test starts the config with ``nnictl create`` (tiny budget appended to the trial command),
checks through the REST API that its trials SUCCEED with intermediate and final metrics, stops it
with ``nnictl stop`` and checks that no process of the experiment is left.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.nni_integration.harness import NniExperiment, rewrite_config, start_experiment

pytestmark = pytest.mark.slow

CONFIGS = REPO_ROOT / "examples" / "nnictl"
# Tiny budget: argparse keeps the last value, so these override the configs' own settings.
TINY = "--epochs 1 --size 8 32 32 --synthetic-patients 9 --batch-size 2"
TRIAL_TIMEOUT = 240.0


def run_config(tmp_path: Path, name: str, n_trials: int, *, overrides: dict | None = None, extra: str = TINY):
    """Start ``name`` with ``n_trials`` trials, wait for them, stop; return (experiment, trials, metrics)."""
    work_dir = tmp_path / "nni-experiments"
    config = tmp_path / name
    rewrite_config(CONFIGS / name, config, work_dir, extra_trial_args=extra,
                   overrides={"maxTrialNumber": n_trials, "trialConcurrency": 1, **(overrides or {})})
    experiment = start_experiment(config, home=tmp_path / "home", work_dir=work_dir)
    try:
        trials = experiment.wait(n_trials, timeout=TRIAL_TIMEOUT * n_trials)
        metrics = experiment.metrics()
        status = experiment.status()
    finally:
        experiment.stop()
    leftovers = experiment.leftover_processes()
    assert not leftovers, f"processes left after nnictl stop: {leftovers}"
    assert status["status"] == "DONE", status
    return experiment, trials, metrics


def assert_succeeded_with_metrics(experiment: NniExperiment, trials: list[dict], metrics: list[dict]) -> None:
    for trial in trials:
        if trial["status"] != "SUCCEEDED":
            pytest.fail(f"trial {trial['trialJobId']} {trial['status']}; stderr:\n"
                        f"{Path(trial['logPath'], 'trial.stderr').read_text()[-3000:]}")
        mine = [m for m in metrics if m["trialJobId"] == trial["trialJobId"]]
        intermediate = [json.loads(json.loads(m["data"])) for m in mine if m["type"] == "PERIODICAL"]
        final = [json.loads(json.loads(m["data"])) for m in mine if m["type"] == "FINAL"]
        assert len(intermediate) >= 1, f"no intermediate result for {trial['trialJobId']}"
        assert len(final) == 1, f"expected one final result, got {final}"
        assert 0.0 <= final[0]["default"] <= 1.0
        assert final[0]["size_mb"] > 0
        assert final[0]["default"] == intermediate[-1]["default"]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """Run ``nni-covid3d ARGS`` in this process with ``HOME=home`` (NNI's registry lives there)."""
    from nni_covid3d.cli import main

    def run(*args: str, home: Path) -> subprocess.CompletedProcess:
        monkeypatch.setenv("HOME", str(home))
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


def test_arch_search_config_runs_and_best_arch_is_fetched(tmp_path: Path, cli) -> None:
    experiment, trials, metrics = run_config(tmp_path, "arch_search.yml", 2)
    assert len(trials) == 2
    assert_succeeded_with_metrics(experiment, trials, metrics)

    out = tmp_path / "best.json"
    done = cli("best-arch", "--experiment", experiment.id, "--out", str(out), home=experiment.home)
    assert done.returncode == 0, done.stderr
    from nni_covid3d.search_spaces import build_model, load_architecture

    arch = load_architecture(out)
    finals = {t["trialJobId"]: json.loads(json.loads(t["finalMetricData"][0]["data"]))["default"] for t in trials}
    best_id = arch["metadata"]["trial"]
    assert finals[best_id] == max(finals.values())
    # The architecture is the one the best trial was given by the tuner.
    best_params = json.loads(next(t for t in trials if t["trialJobId"] == best_id)["hyperParameters"][0])["parameters"]
    assert arch["choices"]["s1_c1"] == best_params["s1_c1"]
    assert arch["choices"]["s1_depth"] == [best_params["s1_depth"]]
    build_model(arch)

    done = cli("report", "--experiment", experiment.id, home=experiment.home)
    assert done.returncode == 0, done.stderr
    assert all(t["trialJobId"] in done.stdout for t in trials)


def test_baseline_grid_config_runs_and_report_gives_the_table(tmp_path: Path, cli) -> None:
    # Two cells of the grid at a tiny size (the full grid's names are checked in test_nnictl_configs).
    grid = {"model": {"_type": "choice", "_value": ["mc3_18"]},
            "dataset": {"_type": "choice", "_value": ["ccccii", "mosmed"]}}
    experiment, trials, metrics = run_config(tmp_path, "baselines_grid.yml", 2, overrides={"searchSpace": grid})
    assert_succeeded_with_metrics(experiment, trials, metrics)
    for trial in trials:
        final = json.loads(json.loads(trial["finalMetricData"][0]["data"]))
        assert 0.0 <= final["test_accuracy"] <= 1.0 and "test_f1" in final

    done = cli("report", "--experiment", experiment.id, "--out-dir", str(tmp_path / "report"), home=experiment.home)
    assert done.returncode == 0, done.stderr
    import csv

    from nni_covid3d.compare import COLUMNS, markdown_table

    with (tmp_path / "report" / "comparison.csv").open() as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == tuple(key for key, _ in COLUMNS)  # the columns of `nni-covid3d compare`
        rows = list(reader)
    ours = [r for r in rows if r["source"].startswith("ours")]
    assert sorted(r["dataset"] for r in ours) == ["CC-CCII", "MosMedData"]
    assert {r["model"] for r in ours} == {"MC3_18"}
    assert all(43 < float(r["size_mb"]) < 45 and float(r["gflops"]) > 0 for r in ours)  # MC3_18: 43.84 MB
    assert all(0 <= float(r["accuracy"]) <= 100 for r in ours)
    reported = [r for r in rows if r["source"].startswith("reported")]
    assert {r["dataset"] for r in reported} == {"CC-CCII", "MosMedData"}
    assert done.stdout.startswith(markdown_table([]).splitlines()[0])


def test_dnas_hpo_config_runs_through_run_config_and_stores_architectures(
    tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Through the package's launcher (what the demo uses) rather than the test harness.
    from nni_covid3d.nnictl.records import load_experiment
    from nni_covid3d.nnictl.run import rest_get, run_config

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    # A shallower, narrower CovidNet3D space keeps the supernet small on CPU.
    space_config = tmp_path / "tiny_space.json"
    space_config.write_text(json.dumps({"preset": "S", "n_cells": [2, 2, 2, 1, 1, 1], "head_channels": 256}))
    experiment_id, trials = run_config(CONFIGS / "dnas_hpo.yml", tmp_path / "run", max_trials=2,
                                       # 12 patients: the search holds out whole training patients
                                       extra_trial_args=f"{TINY} --synthetic-patients 12 --space-config {space_config}",
                                       timeout=TRIAL_TIMEOUT * 2)
    registry = json.loads((tmp_path / "home" / "nni-experiments" / ".experiment").read_text())
    assert registry[experiment_id]["status"] == "STOPPED"
    manager = NniExperiment(experiment_id, 0, tmp_path / "home", tmp_path / "run" / "nni-experiments",
                            int(registry[experiment_id]["pid"]), {})
    manager.record_processes()  # the manager, if it were still alive
    assert not manager.leftover_processes(timeout=10)
    with pytest.raises(OSError):  # the REST server is gone
        rest_get(int(registry[experiment_id]["port"]), "check-status")

    record = load_experiment(experiment_id, tmp_path / "run" / "nni-experiments")
    assert [t.status for t in record.trials] == ["SUCCEEDED", "SUCCEEDED"]
    for trial in record.trials:
        assert set(trial.parameters) == {"tau_init", "tau_final", "arc_learning_rate"}
        assert len(trial.intermediate) >= 1 and trial.final["size_mb"] > 0
        assert trial.final["default"] == trial.intermediate[-1]["default"]
        assert (trial.output_dir / "architecture.json").is_file()
    assert len(trials) == 2

    out = tmp_path / "best_dnas.json"
    done = cli("best-arch", "--experiment", experiment_id, "--out", str(out), home=tmp_path / "home")
    assert done.returncode == 0, done.stderr
    arch = json.loads(out.read_text())
    best = next(t for t in record.trials if t.id == arch["metadata"]["trial"])
    assert best.final["default"] == max(t.final["default"] for t in record.trials)
    stored = json.loads((best.output_dir / "architecture.json").read_text())
    assert arch["choices"] == stored["choices"]


def test_invalid_architecture_fails_the_trial_with_a_clear_message(tmp_path: Path) -> None:
    space = json.loads((REPO_ROOT / "search_spaces" / "covidnet3d_S.json").read_text())
    space["s2_c3"] = {"_type": "choice", "_value": ["mbconv_k9_e3"]}  # not a candidate of the space
    space_file = tmp_path / "bad_space.json"
    space_file.write_text(json.dumps(space))
    work_dir = tmp_path / "nni-experiments"
    config = tmp_path / "bad.yml"
    rewrite_config(CONFIGS / "arch_search.yml", config, work_dir, extra_trial_args=TINY,
                   overrides={"maxTrialNumber": 1, "searchSpaceFile": str(space_file)})
    experiment = start_experiment(config, home=tmp_path / "home", work_dir=work_dir)
    try:
        (trial,) = experiment.wait(1, timeout=TRIAL_TIMEOUT)
        stderr = experiment.trial_file(trial["trialJobId"], "stderr")
        final_metrics = experiment.metrics(trial["trialJobId"])
    finally:
        experiment.stop()
    assert not experiment.leftover_processes()
    assert trial["status"] == "FAILED"
    assert "invalid architecture" in stderr and "'s2_c3'" in stderr and "mbconv_k9_e3" in stderr, stderr
    assert "Traceback" not in stderr  # a message, not a crash
    assert (Path(trial["logPath"]) / "trial.stderr").read_text() == stderr
    assert not [m for m in final_metrics if m["type"] == "FINAL"]
