"""``nni-covid3d benchmark --pool`` end to end at toy scale: a separate test cohort, a pool trained once."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from nni_covid3d.benchmark import RunRecord
from nni_covid3d.cli import main

pytestmark = pytest.mark.slow

TOY = ["--widths", "8", "8", "8", "8", "8", "8", "--n-cells", "1", "1", "1", "1", "1", "1", "--head-channels", "16",
       "--size", "8", "32", "32", "--search-epochs", "1", "--retrain-epochs", "1", "--batch-size", "4",
       "--bootstrap", "50"]


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    from nni_covid3d.data import write_synthetic_dataset

    base = tmp_path_factory.mktemp("cohorts")
    train = write_synthetic_dataset("ccccii", base / "train", n_patients=16, seed=0, size=32, slices=(8, 9))
    test = write_synthetic_dataset("ccccii", base / "test", n_patients=9, seed=1, size=32, slices=(8, 9))
    return train, test


def _pool(cohorts, out, **settings):
    """The pool protocol at toy scale through the library (the command line is run by the refusal test)."""
    from nni_covid3d.pool import PoolSettings, run_pool_benchmark

    train, test = cohorts
    space = {"preset": "S", "widths": [8] * 6, "n_cells": [1] * 6, "head_channels": 16}
    toy = PoolSettings(space_config=space, depth=8, height=32, width=32, search_epochs=1, retrain_epochs=1,
                       batch_size=4, bootstrap=50, median_draws=40, random_archs=3, training_seeds=2,
                       strategies=("random-oneshot",), strategy_seeds=1, **settings)
    return run_pool_benchmark("ccccii", train, test, out, toy, log=lambda _: None)


def test_pool_is_trained_once_and_every_model_reads_the_test_cohort_once(cohorts, tmp_path):
    from nni_covid3d.data import load_dataset, load_split

    out = tmp_path / "pool"
    _pool(cohorts, out, seeds=1)
    summary = json.loads((out / "pool.json").read_text())
    context = summary["context"]
    # Pool: 3 members + the first one again with training seed 1; searches: 1 GumbelDNAS + 1 RandomOneShot,
    # each export trained with 2 seeds.
    assert context["models_trained_now"] == 8 and context["test_reads"] == 8 * context["test_scans"]
    train_root, test_root = cohorts
    split = load_split(out / "split.json", load_dataset("ccccii", train_root).scans + load_dataset("ccccii", test_root).scans)
    assert {s.patient_id for s in split["test"]} == {s.patient_id for s in load_dataset("ccccii", test_root).scans}
    assert not {s.patient_id for s in split["test"]} & {s.patient_id for s in split["train"] + split["val"]}
    assert summary["pool"]["size"] == 3 and summary["pool"]["reseeded"] == 1
    assert [m["strategy"] for m in summary["methods"]] == ["gumbel-dnas", "random-oneshot"]
    for method in summary["methods"]:
        for key in ("minus_pool_mean_ci", "minus_pool_mean_ci_models"):
            assert -1 <= method[key][0] <= method[key][1] <= 1, method
    row = summary["searches"][0]
    assert 0 <= row["percentile"] <= 100 and len(row["test_seeds"]) == 2 and 1 <= row["random_search_k"] <= 3
    # GumbelDNAS ranks the pool by its log-probabilities and by its supernet; RandomOneShot by its supernet only.
    assert set(row["ranking"]) == {f"{s}_vs_{t}" for s in ("log_probability", "supernet_accuracy") for t in ("val", "test")}
    assert set(summary["searches"][1]["ranking"]) == {"supernet_accuracy_vs_val", "supernet_accuracy_vs_test"}
    assert 0 <= row["entropy"] <= 1 and (out / "pool_ranking.png").stat().st_size > 0
    assert "Random search pick" in (out / "pool.md").read_text()

    # A GumbelDNAS variant added later reuses the pool and the searches done: only its models train.
    _pool(cohorts, out, seeds=1, variants=({"arch_credit": "choice"},))
    again = json.loads((out / "pool.json").read_text())
    assert again["context"]["models_trained_now"] == 2 and len(again["searches"]) == 3
    assert again["pool"]["members"] == summary["pool"]["members"]
    assert [m["strategy"] for m in again["methods"]] == ["gumbel-dnas", "gumbel-dnas[arch_credit=choice]",
                                                         "random-oneshot"]

    # A run stopped before a pool member was trained trains that member only, and the same seeds give the
    # same model again.
    member = out / "pool" / "arch02" / "seed0"
    before = RunRecord.load(member / "record.json")
    shutil.rmtree(member)
    _pool(cohorts, out, seeds=1, variants=({"arch_credit": "choice"},))
    assert json.loads((out / "pool.json").read_text())["context"]["models_trained_now"] == 1
    after = RunRecord.load(member / "record.json")
    assert after.architecture == before.architecture and after.val_score == pytest.approx(before.val_score)
    np.testing.assert_allclose(after.probs, before.probs, atol=1e-6)


def test_a_test_cohort_sharing_patients_or_classes_is_refused_naming_both_roots(cohorts, tmp_path, capsys):
    from nni_covid3d.data import write_synthetic_dataset

    def refused(dataset, train, test_root, reason):
        code = main(["benchmark", "--pool", "--dataset", dataset, "--root", str(train), "--test-root", str(test_root),
                     "--out", str(tmp_path / "out"), *TOY])
        message = capsys.readouterr().err.strip().splitlines()[-1]
        assert code != 0 and reason in message and str(train) in message and str(test_root) in message, message

    train, _ = cohorts
    refused("ccccii", train, write_synthetic_dataset("ccccii", tmp_path / "same", n_patients=3, seed=0, size=32,
                                                     slices=(8, 8)), "patient id")
    # COVID-CTset allows a cohort of one class; CC-CCII's reader already refuses a missing class folder.
    two = write_synthetic_dataset("covidctset", tmp_path / "two", n_patients=3, seed=0, size=32, slices=(8, 8))
    refused("covidctset", two, write_synthetic_dataset("covidctset", tmp_path / "one", n_patients=1, seed=1, size=32,
                                                       slices=(8, 8)), "classes")
    assert not (tmp_path / "out" / "pool").exists()  # nothing trained
