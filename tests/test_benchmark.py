"""``nni-covid3d benchmark`` end to end at toy scale, and its statistics."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from nni_covid3d.benchmark import RunRecord, bootstrap_patients, summarize
from nni_covid3d.cli import main

pytestmark = pytest.mark.slow

TOY = ["--widths", "8", "8", "8", "8", "8", "8", "--n-cells", "1", "1", "1", "1", "1", "1", "--head-channels", "16",
       "--size", "8", "32", "32", "--search-epochs", "2", "--retrain-epochs", "1", "--batch-size", "4",
       "--random-archs", "2", "--seeds", "2", "--bootstrap", "200"]
METHOD_ROWS = {"gumbel-dnas", "random", "random-best", "darts", "gumbel-darts", "proxyless", "random-oneshot", "mc3_18",
               "histogram", "majority"}


def _table_without_times(path):
    """The summary rows without wall times; NNI's RandomOneShot samples from an unseeded RNG
    (``nni.mutable`` ``Categorical.random``), so its row is not reproducible by design."""
    with path.open() as handle:
        return [{k: v for k, v in row.items() if not k.endswith("_hours")} for row in csv.DictReader(handle)
                if row["method"] != "random-oneshot"]


@pytest.fixture(scope="module")
def toy_dataset(tmp_path_factory):
    from nni_covid3d.data import write_synthetic_dataset

    return write_synthetic_dataset("ccccii", tmp_path_factory.mktemp("data") / "ccccii", n_patients=18, seed=0,
                                   size=32, slices=(8, 10))


def test_benchmark_runs_every_method_and_is_reproducible(toy_dataset, tmp_path):
    out = tmp_path / "bench"
    assert main(["benchmark", "--dataset", "ccccii", "--root", str(toy_dataset), "--out", str(out), *TOY]) == 0
    result = json.loads((out / "benchmark.json").read_text())
    assert {row["method"] for row in result["methods"]} == METHOD_ROWS
    for row in result["methods"]:
        assert row["accuracy_lo"] <= row["accuracy_mean"] <= row["accuracy_hi"], row
    by_method = {row["method"]: row for row in result["methods"]}
    assert by_method["random"]["runs"] == 4 and by_method["gumbel-dnas"]["seeds"] == 2
    searched_params = by_method["gumbel-dnas"]["params"]
    records = [RunRecord.load(p) for p in (out / "runs" / "random").glob("*/record.json")]
    seeds = {r.seed: RunRecord.load(out / "runs" / "gumbel-dnas" / f"seed{r.seed}" / "record.json").params for r in records}
    assert all(abs(r.params - seeds[r.seed]) <= 0.25 * seeds[r.seed] for r in records) and searched_params > 0
    assert {(p["versus"], p["metric"]) for p in result["paired"]} == {
        (v, m) for v in ("random", "random-best") for m in ("accuracy", "balanced_accuracy")}
    for entry in result["paired"]:
        assert entry["lo"] <= entry["hi"]
    # 2 seeds x (search + 2 random + 4 NNI strategies + 1 baseline): each trained model reads the test split once.
    context = result["context"]
    assert context["models_trained_now"] == 16 and context["test_reads"] == 16 * context["test_scans"]
    assert (out / "benchmark.png").stat().st_size > 0 and "Intensity histogram" in (out / "benchmark.md").read_text()

    # The same seeds give the same table; a finished benchmark is not trained again.
    again = tmp_path / "again"
    assert main(["benchmark", "--dataset", "ccccii", "--root", str(toy_dataset), "--out", str(again), *TOY]) == 0
    assert _table_without_times(again / "benchmark.csv") == _table_without_times(out / "benchmark.csv")
    assert main(["benchmark", "--dataset", "ccccii", "--root", str(toy_dataset), "--out", str(out), *TOY]) == 0
    assert json.loads((out / "benchmark.json").read_text())["context"]["models_trained_now"] == 0


def test_bootstrap_resamples_whole_patients():
    patients = ["a", "a", "b", "c", "c", "c"]
    for index in bootstrap_patients(patients, 20, seed=0):
        drawn = [patients[i] for i in index]
        assert all(drawn.count(p) % patients.count(p) == 0 for p in set(drawn))


def test_summary_intervals_and_paired_difference_on_known_predictions():
    labels = [0, 1] * 10
    perfect = [[1.0, 0.0] if y == 0 else [0.0, 1.0] for y in labels]
    wrong = [[0.0, 1.0] if y == 0 else [1.0, 0.0] for y in labels]
    records = [RunRecord("gumbel-dnas", s, 0, 10, 0.1, 0.1, 1.0, 1.0, 1.0, labels, perfect) for s in range(2)]
    records += [RunRecord("random", s, k, 10, 0.1, 0.1, 0.5, 0.0, 1.0, labels, wrong if k == 1 else perfect)
                for s in range(2) for k in (1, 2)]
    summary = summarize(records, [f"p{i}" for i in range(20)], ["normal", "covid"], bootstrap=100)
    rows = {row["method"]: row for row in summary["methods"]}
    assert rows["gumbel-dnas"]["accuracy_mean"] == 1.0 and rows["gumbel-dnas"]["accuracy_std"] == 0.0
    assert rows["random"]["accuracy_mean"] == 0.5  # the mean of K models a seed
    paired = {p["metric"]: p for p in summary["paired"]}
    assert paired["accuracy"]["difference"] == pytest.approx(0.5)
    assert paired["accuracy"]["lo"] == pytest.approx(0.5) and paired["accuracy"]["hi"] == pytest.approx(0.5)
    assert np.isclose(rows["gumbel-dnas"]["auc_mean"], 1.0)


def test_a_damaged_record_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "record.json"
    path.write_text('{"method": 1')
    with pytest.raises(ValueError, match=f"{path}: damaged benchmark record"):
        RunRecord.load(path)


def _train_slowly(run_dir, log_path):
    """A stand-in model training: appends to a shared log, takes a moment, returns a record."""
    import os
    import time

    with open(log_path, "a") as log:
        log.write(f"{run_dir.name} {os.getpid()}\n")
    time.sleep(0.5)
    return RunRecord("random", 0, int(run_dir.name[-1]), 1, 0.1, 0.1, 0.5, 0.0, 1.0, [0, 1], [[0.6, 0.4], [0.3, 0.7]])


def _worker(out, log_path):
    from functools import partial

    from nni_covid3d.benchmark import run_once

    return [run_once(out / f"seed0-{k}", partial(_train_slowly, log_path=log_path), log=lambda _: None).member
            for k in (1, 2, 3)]


def test_processes_sharing_a_folder_train_each_model_once(tmp_path):
    import multiprocessing

    log_path = tmp_path / "trained.log"
    with multiprocessing.get_context("fork").Pool(3) as pool:
        results = pool.starmap(_worker, [(tmp_path / "runs", log_path)] * 3)
    assert results == [[1, 2, 3]] * 3  # every process gets every record
    trained = log_path.read_text().split("\n")[:-1]
    assert sorted(line.split()[0] for line in trained) == ["seed0-1", "seed0-2", "seed0-3"]  # each trained once


def test_run_jobs_skips_a_job_another_process_holds_and_comes_back_to_it(tmp_path):
    import fcntl
    import threading

    from nni_covid3d.benchmark import run_jobs

    order = []
    jobs = [(tmp_path / f"job{i}" / ".job.lock", lambda i=i: order.append(i)) for i in range(3)]
    jobs[0][0].parent.mkdir(parents=True)
    with jobs[0][0].open("a") as held:  # another process working on job 0 (flock: per open file)
        fcntl.flock(held, fcntl.LOCK_EX)
        releaser = threading.Timer(0.5, fcntl.flock, (held, fcntl.LOCK_UN))
        releaser.start()
        run_jobs(jobs, log=lambda _: None)
        releaser.join()
    assert order == [1, 2, 0]
