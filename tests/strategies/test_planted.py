"""The planted-problem suite: known answers hold, GumbelDNAS finds them, controls do not, passes are counted."""
from __future__ import annotations

import itertools

import pytest
import torch

from nni_covid3d.strategies.planted import PROBLEMS, run_planted, train_candidate

SEEDS = range(10)


def _all_samples(problem, seed: int) -> list[dict]:
    labels = problem.build_space(seed).simplify()
    return [dict(combo) for combo in itertools.product(*[[(k, v) for v in m.values] for k, m in labels.items()])]


@pytest.mark.parametrize("name", ["information", "capacity", "ranking", "chain", "depth"])
def test_planted_answer_is_the_best_candidate_trained_alone(name):
    problem = PROBLEMS[name]
    for seed in (0, 1):
        scores = {str(sample): train_candidate(problem, seed, sample) for sample in _all_samples(problem, seed)}
        answer = str({**_all_samples(problem, seed)[0], **problem.answer(seed)})
        assert min(scores, key=lambda k: scores[k][1]) == answer, scores  # lowest loss
        if name == "ranking":  # correct x3 and x0.3 classify alike: only their loss ranks them
            assert scores[answer][0] == max(accuracy for accuracy, _ in scores.values()), scores
            continue
        assert max(scores, key=lambda k: scores[k][0]) == answer, scores
        runner_up = sorted(accuracy for accuracy, _ in scores.values())[-2]
        assert scores[answer][0] > 0.85 and runner_up < 0.75, scores


@pytest.mark.slow
def test_covidnet3d_answer_is_the_best_kernel_trained_alone():
    problem = PROBLEMS["covidnet3d"]
    scores = {s["s1_c1"]: train_candidate(problem, 1, s) for s in _all_samples(problem, 1)}
    assert max(scores, key=lambda k: scores[k][0]) == "mbconv_k7_e3", scores
    assert min(scores, key=lambda k: scores[k][1]) == "mbconv_k7_e3", scores


@pytest.mark.slow
@pytest.mark.parametrize("name", ["information", "capacity", "ranking", "chain", "depth"])
def test_gumbel_dnas_defaults_find_the_planted_answer(name):
    problem = PROBLEMS[name]
    results = [run_planted(problem, "gumbel-dnas", seed) for seed in SEEDS]
    # Depth is not solved yet by any strategy at this budget (benchmarks/RESULTS.md, *Planted problems*:
    # 60% here, GumbelDARTS 50%); chance is 1/3. The bar guards what is reached.
    assert sum(r.success for r in results) >= (6 if name == "depth" else 9), [r.export for r in results]


@pytest.mark.slow
def test_gumbel_dnas_defaults_find_the_planted_kernel_in_covidnet3d():
    problem = PROBLEMS["covidnet3d"]
    results = [run_planted(problem, "gumbel-dnas", seed) for seed in SEEDS]
    assert sum(r.success for r in results) >= 9, [r.export for r in results]


@pytest.mark.slow
def test_controls_do_not_find_the_planted_answers():
    # NNI's RandomOneShot exports a random sample, and the straight-through estimator without fair
    # training (GumbelDNAS before the suite) ranks a weak classifier first: the suite can fail.
    random_export = [run_planted(PROBLEMS["information"], "random-oneshot", seed) for seed in SEEDS]
    assert sum(r.success for r in random_export) <= 6
    before = [run_planted(PROBLEMS["ranking"], "gumbel-dnas", seed, arch_estimator="straight_through",
                          weight_sampling="gumbel", warmup_epochs=0) for seed in SEEDS]
    assert sum(r.success for r in before) <= 6, [r.export for r in before]


def test_passes_are_counted_per_candidate_and_strategy():
    problem = PROBLEMS["information"]  # 256 training samples in batches of 16: 16 steps per epoch
    ours = run_planted(problem, "gumbel-dnas", 0, epochs=4)  # 1 warm-up epoch, 3 searching
    assert ours.trained_passes == 4 * 16  # one candidate trained per weight step
    assert ours.forward_passes == 3 * 16 * 2  # two forward-only paths per architecture step
    darts = run_planted(problem, "darts", 0, epochs=4)
    assert darts.trained_passes == 4 * 16 * 4 * 2  # every candidate, architecture and weight steps
    assert darts.forward_passes == 0
    assert ours.forward_equivalents == 3 * ours.trained_passes + ours.forward_passes


def test_candidate_order_depends_on_the_seed():
    answers = {str(PROBLEMS["capacity"].answer(seed)) for seed in SEEDS}
    assert len(answers) > 1
    torch.testing.assert_close(PROBLEMS["depth"].make_data(3, 8, "train").tensors[0],
                               PROBLEMS["depth"].make_data(3, 8, "train").tensors[0])

