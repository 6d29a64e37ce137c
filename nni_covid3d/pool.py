"""``nni-covid3d benchmark --pool``: does a search beat a random draw from its own space?

The powered protocol (Li & Talwalkar 2019; Yang et al. 2020; Yu et al. 2020), on a separate, large
test cohort (``--test-root``; the training root gives train and validation patients only):

* **a random pool trained once**: ``random_archs`` architectures drawn uniformly from the space,
  size-matched to the space's typical architecture (parameters within ``size_tolerance`` of the median
  of 1,000 uniform draws), each trained stand-alone with the shared recipe (training seed 0, and the
  first ``reseeded_share`` of them with training seeds 1 ... ``training_seeds - 1`` too, to measure
  the training-seed spread). Every search seed and every strategy is compared with the same pool;
* **searches**: GumbelDNAS with ``seeds`` search seeds, NNI's strategies with ``strategy_seeds``, all
  through :func:`nni_covid3d.search.run_search`; each export retrained with every training seed;
* **per search**: the export's percentile within the pool, the paired difference with the pool's mean
  (bootstrap over test patients), random search at equal compute (the best of ``k`` pool members by
  validation accuracy, ``k`` = the searched pipeline's seconds over one stand-alone training, rounded
  up) with an exact McNemar test, the final distribution's normalised entropy;
* **ranking**: for every pool architecture, its log-probability under the search's final distribution
  and (single-path supernets) its validation accuracy under the shared weights with BatchNorm
  recomputed for that path; Kendall τ and Spearman ρ against stand-alone validation and test accuracy,
  with bootstrap intervals over the pool, and precision at the top 25%; and the pool member each score
  ranks first (selection by the supernet among the pool's paths is random search with weight sharing,
  Li & Talwalkar 2019), whose stand-alone accuracy is known without training anything more;
* **controls**: the intensity-histogram classifier and the majority class on the test cohort.

Output folder::

    out/split.json                           train / validation (training root) and test (test cohort)
    out/pool/architectures.json              the pool's architectures (drawn once, read back by every later run)
    out/pool/arch<K>/seed<T>/record.json     pool member K trained with training seed T
    out/runs/<strategy>/seed<S>/search.json  one search: export, final probabilities, path scores, time
    out/runs/<strategy>/seed<S>/train<T>/record.json   its export retrained with training seed T
    out/pool.md, pool.json, runs.csv         the tables; pool_accuracy.png, pool_ranking.png the plots

Resumable and shareable as ``benchmark``: a finished model is never trained again, a stopped search or
training continues, and several processes started with the same command on the same folder take
different models (each model's folder is locked while one process works on it).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from nni_covid3d.benchmark import (
    BenchmarkSettings, JsonRecord, Protocol, RunRecord, benchmark_split, bootstrap_patients, intensity_controls, run_jobs,
    run_once,
)

__all__ = ["PoolSettings", "SearchRecord", "pool_architectures", "log_probability", "normalized_entropy",
           "variant_name", "parse_variant", "run_pool_benchmark", "analyse_pool"]

#: Strategies whose supernet runs one path at a time, so a fixed path can be scored with shared weights.
SINGLE_PATH = ("gumbel-dnas", "random-oneshot")
_TITLES = {"gumbel-dnas": "GumbelDNAS", "darts": "DARTS (NNI)", "gumbel-darts": "GumbelDARTS (NNI)",
           "proxyless": "Proxyless (NNI)", "random-oneshot": "RandomOneShot (NNI)"}


@dataclass(frozen=True)
class PoolSettings(BenchmarkSettings):
    """:class:`BenchmarkSettings` read as the pool protocol: ``seeds`` are GumbelDNAS's search seeds and
    ``random_archs`` the pool's size.

    Attributes:
        variants: GumbelDNAS settings compared beside its defaults, each ``{option: value}`` (e.g.
            ``{"arch_credit": "choice"}``; ``search_epochs`` sets the variant's search budget), run with
            ``seeds`` search seeds as the method ``gumbel-dnas[option=value,...]`` (:func:`variant_name`).
        strategy_seeds: search seeds of each NNI strategy.
        training_seeds: training seeds of every searched export and of the reseeded pool members.
        reseeded_share: share of the pool (its first members) trained with every training seed.
        recalibration_batches: training batches that recompute BatchNorm before a path is scored.
        median_draws: uniform draws whose median parameter count the pool is size-matched to.
    """

    seeds: int = 5
    random_archs: int = 24
    strategies: tuple[str, ...] = ("darts", "gumbel-darts", "random-oneshot")
    baselines: tuple[str, ...] = ()
    search_epochs: int = 16
    variants: tuple[Mapping[str, Any], ...] = ()
    strategy_seeds: int = 3
    training_seeds: int = 2
    reseeded_share: float = 1 / 3
    recalibration_batches: int = 8
    median_draws: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.random_archs < 3 or self.training_seeds < 1 or self.strategy_seeds < 1:
            raise ValueError(f"the pool needs at least 3 architectures and 1 training / strategy seed, got "
                             f"{self.random_archs}, {self.training_seeds}, {self.strategy_seeds}")
        if not 0.0 <= self.reseeded_share <= 1.0:
            raise ValueError(f"reseeded_share must lie in [0, 1], got {self.reseeded_share}")
        if self.baselines:
            raise ValueError("the pool protocol trains no baselines; run benchmark without --pool for them")
        from nni_covid3d.strategies import GumbelDNAS

        for variant in self.variants:
            try:  # an unknown option or value is refused now, not after the pool is trained
                GumbelDNAS(**{key: value for key, value in variant.items() if key != "search_epochs"})
            except TypeError as error:
                raise ValueError(f"variant {variant_name(variant)}: {error}") from None

    @property
    def methods(self) -> dict[str, tuple[str, dict[str, Any], int]]:
        """``{method: (strategy, options, search seeds)}`` in the order they run."""
        methods = {"gumbel-dnas": ("gumbel-dnas", {}, self.seeds)}
        methods.update({variant_name(v): ("gumbel-dnas", dict(v), self.seeds) for v in self.variants})
        methods.update({s: (s, {}, self.strategy_seeds) for s in self.strategies})
        return methods

    @property
    def reseeded(self) -> int:
        """How many pool members (the first ones) are trained with every training seed."""
        return math.ceil(self.reseeded_share * self.random_archs) if self.training_seeds > 1 else 0


@dataclass
class SearchRecord(JsonRecord):
    """One search: what it exported, its final distribution, how it scored the pool, its cost."""

    strategy: str
    seed: int
    architecture: dict[str, Any]
    probabilities: dict[str, dict[str, float]] | None
    search_seconds: float
    path_scores: list[float] | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    damaged = "damaged search record", "search again"


def variant_name(options: Mapping[str, Any]) -> str:
    """The method name of a GumbelDNAS variant: ``gumbel-dnas[key=value,...]`` (keys sorted)."""
    return "gumbel-dnas[" + ",".join(f"{key}={options[key]}" for key in sorted(options)) + "]"


def parse_variant(text: str) -> dict[str, Any]:
    """``"arch_credit=choice,arc_learning_rate=0.1"`` -> ``{"arch_credit": "choice", "arc_learning_rate": 0.1}``
    (numbers become numbers)."""
    import ast

    options: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"variant {text!r}: expected OPTION=VALUE[,OPTION=VALUE...], got {item!r}")
        try:
            options[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            options[key.strip()] = value.strip()
    if not options:
        raise ValueError(f"variant {text!r} sets no option")
    return options


# ------------------------------------------------------------------------------------------- pool
def pool_architectures(space_config: Mapping[str, Any], size: int, tolerance: float,
                       median_draws: int = 1000) -> tuple[list[dict[str, Any]], float]:
    """``size`` uniform draws of the space whose parameters lie within ``tolerance`` of the median of
    ``median_draws`` other uniform draws (the space's typical architecture). Returns (architectures, median)."""
    from nni_covid3d.search_spaces import build_model, random_architecture
    from nni_covid3d.search_spaces.cost import count_parameters

    def params(seed: int) -> tuple[dict[str, Any], int]:
        arch = random_architecture(space_config, seed=seed)
        return arch, count_parameters(build_model(arch))

    median = float(np.median([params(10_000_000 + i)[1] for i in range(median_draws)]))
    found = []
    for draw in range(100 * size + 1000):
        arch, n = params(draw)
        if abs(n - median) <= tolerance * median:
            found.append(arch)
            if len(found) == size:
                return found, median
    raise RuntimeError(f"only {len(found)} uniform draws lie within ±{tolerance:.0%} of the median {median:,.0f} "
                       "parameters; widen size_tolerance")


def _stored_pool(path: Path, space_config: Mapping[str, Any],
                 settings: PoolSettings) -> tuple[list[dict[str, Any]], float]:
    """The pool drawn by :func:`pool_architectures`, kept in ``path`` so that every later run of the same
    folder compares with exactly these architectures (and does not draw them again)."""
    from nni_covid3d.atomic import atomic_write_text

    drawn_with = {"space": dict(space_config), "size": settings.random_archs, "tolerance": settings.size_tolerance,
                  "median_draws": settings.median_draws}
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored["drawn_with"] != json.loads(json.dumps(drawn_with)):
            raise ValueError(f"{path}: this folder's pool was drawn with {stored['drawn_with']}, not {drawn_with}; "
                             "choose another --out")
        return stored["architectures"], stored["median_params"]
    pool, median = pool_architectures(space_config, settings.random_archs, settings.size_tolerance,
                                      settings.median_draws)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"drawn_with": drawn_with, "median_params": median, "architectures": pool}
    atomic_write_text(path, json.dumps(record) + "\n")
    return pool, median


def log_probability(probabilities: Mapping[str, Mapping[str, float]], choices: Mapping[str, Any]) -> float:
    """Log-probability of an architecture's ``choices`` under a search's final distribution (independent
    choices); a depth choice's value ``[k]`` is keyed ``"k"``, as ``SearchResult.probabilities``."""
    total = 0.0
    for label, distribution in probabilities.items():
        value = choices[label]
        key = str(value[0] if isinstance(value, list) else value)
        total += math.log(max(float(distribution[key]), 1e-300))
    return total


def normalized_entropy(probabilities: Mapping[str, Mapping[str, float]]) -> float:
    """Mean over choices of the entropy of its distribution over log(number of candidates): 1 = uniform."""
    values = []
    for distribution in probabilities.values():
        p = np.asarray(list(distribution.values()), dtype=float)
        if len(p) > 1:
            p = p[p > 0]
            values.append(float(-(p * np.log(p)).sum() / math.log(len(distribution))))
    return float(np.mean(values)) if values else float("nan")


# ----------------------------------------------------------------------------------------- protocol
def _path_batches(protocol: Protocol, settings: PoolSettings, seed: int) -> tuple[list[Any], list[Any]]:
    """Training image batches (BatchNorm recalibration) and validation (images, labels) batches."""
    import torch
    from torch.utils.data import DataLoader

    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(protocol.data.train, batch_size=settings.batch_size, shuffle=True, generator=generator,
                       drop_last=True)  # a batch of one volume breaks BatchNorm in training mode
    recalibration = []
    for batch in train:
        recalibration.append(batch["image"])
        if len(recalibration) == settings.recalibration_batches:
            break
    validation = [(b["image"], b["label"]) for b in DataLoader(protocol.data.val, batch_size=settings.batch_size)]
    return recalibration, validation


def run_pool_benchmark(
    dataset: str,
    root: str | Path,
    test_root: str | Path,
    out_dir: str | Path,
    settings: PoolSettings = PoolSettings(),
    *,
    task: str | None = None,
    split_seed: int = 0,
    val_fraction: float = 0.25,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the pool protocol (module docstring); returns the summary JSON (also written to ``out/pool.json``).

    ``val_fraction`` of the training root's patients validate (checkpoint selection, random search, the
    ranking's stand-alone validation accuracy); with no test split to carve out, a quarter by default.
    """
    from nni_covid3d.compare import DATASET_TITLES
    from nni_covid3d.search_spaces import build_model

    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    split, class_names = benchmark_split(dataset, root, out, test_root=test_root, task=task, split_seed=split_seed,
                                         val_fraction=val_fraction)
    protocol = Protocol(settings, split, class_names, out / "cache")
    pool, median_params = _stored_pool(out / "pool" / "architectures.json", protocol.space_config, settings)
    samples = [arch["choices"] for arch in pool]

    def pool_member(k: int, training_seed: int) -> Callable[[Path], RunRecord]:
        def make(run_dir: Path) -> RunRecord:
            val, probs, seconds = protocol.train_and_test("covidnet3d", run_dir, training_seed, pool[k])
            return RunRecord("pool", training_seed, k, **protocol.cost(build_model(pool[k])), val_score=val,
                             search_seconds=0.0, train_seconds=seconds, labels=protocol.test_labels, probs=probs,
                             architecture=pool[k])
        return make

    def search(method: str, seed: int, run_dir: Path) -> SearchRecord:
        path = run_dir / "search.json"
        if path.is_file():
            return SearchRecord.load(path)
        log(f"[benchmark] {run_dir} search ...")
        strategy, options, _ = settings.methods[method]
        options = dict(options)
        epochs = options.pop("search_epochs", None)
        result, seconds = protocol.search(strategy, seed, run_dir / "search", options, epochs)
        scores = None
        if strategy in SINGLE_PATH:
            from nni_covid3d.strategies.path_scoring import score_paths

            start = time.perf_counter()
            scores = score_paths(result.oneshot_module, samples, *_path_batches(protocol, settings, seed))
            log(f"[benchmark] {run_dir}: {len(samples)} pool paths scored with shared weights in "
                f"{time.perf_counter() - start:.0f} s")
        record = SearchRecord(method, seed, dict(result.architecture), result.probabilities, seconds, scores,
                              list(result.history))
        record.save(path)
        return record

    def searched(method: str, seed: int) -> Callable[[], None]:
        run_dir = out / "runs" / method / f"seed{seed}"

        def job() -> None:
            found = search(method, seed, run_dir)
            for t in range(settings.training_seeds):
                run_once(run_dir / f"train{t}", lambda d, t=t: protocol.searched_record(
                    method, seed, d, found.architecture, found.search_seconds, training_seed=t), log)
        return job

    jobs: list[tuple[Path, Callable[[], Any]]] = []
    for k in range(settings.random_archs):
        for t in range(settings.training_seeds if k < settings.reseeded else 1):
            run_dir = out / "pool" / f"arch{k:02d}" / f"seed{t}"
            jobs.append((run_dir / ".job.lock", lambda d=run_dir, k=k, t=t: run_once(d, pool_member(k, t), log)))
    for method, (_, _, seeds) in settings.methods.items():
        for seed in range(seeds):
            jobs.append((out / "runs" / method / f"seed{seed}" / ".job.lock", searched(method, seed)))
    run_jobs(jobs, log)

    pool_records = [RunRecord.load(p) for p in sorted((out / "pool").glob("arch*/seed*/record.json"))]
    pool_records = [r for r in pool_records if r.member < settings.random_archs]
    searches, searched_records = [], []
    for method, (_, _, seeds) in settings.methods.items():
        for seed in range(seeds):
            run_dir = out / "runs" / method / f"seed{seed}"
            searches.append(SearchRecord.load(run_dir / "search.json"))
            searched_records += [RunRecord.load(run_dir / f"train{t}" / "record.json")
                                 for t in range(settings.training_seeds)]
    controls = intensity_controls(split, class_names, protocol.preprocessing)
    summary = analyse_pool(pool_records, searches, searched_records, controls, protocol.test_patients,
                           bootstrap=settings.bootstrap)
    summary["context"] = {
        "dataset": dataset, "dataset_title": DATASET_TITLES.get(dataset, dataset), "root": str(root),
        "test_root": str(test_root),
        "split_sizes": ", ".join(f"{name} {len({s.patient_id for s in scans})} patients / {len(scans)} scans"
                                 for name, scans in split.items()),
        "input_size": "x".join(map(str, protocol.input_size[1:])), "median_params": median_params,
        "size_tolerance": settings.size_tolerance, "wall_hours": (time.perf_counter() - started) / 3600,
        "models_trained_now": protocol.trained, "test_reads": protocol.test_set.reads,
        "test_scans": len(protocol.test_set),
        "settings": {**asdict(settings), "space_config": dict(settings.space_config)},
    }
    from nni_covid3d.pool_report import write_pool_report

    write_pool_report(summary, [*pool_records, *searched_records], out)
    return summary


# ----------------------------------------------------------------------------------------- analysis
def _interval(samples: Sequence[float]) -> tuple[float, float]:
    values = np.asarray(samples, dtype=float)
    return float(np.nanpercentile(values, 2.5)), float(np.nanpercentile(values, 97.5))


def _model_level_differences(searched: Sequence[float], pool: Sequence[float], n: int, seed: int) -> np.ndarray:
    """Bootstrap of mean(searched) - mean(pool) resampling the models themselves (search seeds and pool
    members): an interval that carries the spread between seeds, which resampling test patients does not."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(searched, dtype=float), np.asarray(pool, dtype=float)
    return np.array([a[rng.integers(len(a), size=len(a))].mean() - b[rng.integers(len(b), size=len(b))].mean()
                     for _ in range(n)])


def analyse_pool(pool: Sequence[RunRecord], searches: Sequence[SearchRecord], searched: Sequence[RunRecord],
                 controls: Sequence[RunRecord], test_patients: Sequence[str], *, bootstrap: int = 1000,
                 seed: int = 0) -> dict[str, Any]:
    """The pool protocol's figures from its records (see the module docstring for what each means).

    Args:
        pool: pool members (``seed`` = training seed, ``member`` = pool index).
        searches: one per (strategy, search seed).
        searched: retrained exports (``seed`` = search seed, ``member`` = training seed).
        controls: models without a 3D network (one record each).
        test_patients: the patient of each test scan (bootstrap groups).
    """
    from nni_covid3d.statistics import mcnemar_exact, percentile_in_pool, precision_at_top, rank_correlations

    resamples = bootstrap_patients(test_patients, bootstrap, seed)
    base = sorted((r for r in pool if r.seed == 0), key=lambda r: r.member)
    pool_test = np.array([r.accuracy() for r in base])
    pool_val = np.array([np.nan if r.val_score is None else r.val_score for r in base])
    pool_boot = np.array([[r.accuracy(i) for i in resamples] for r in base])  # [members, resamples]
    train_seconds = float(np.median([r.train_seconds for r in base]))
    reseeded = {}
    for r in pool:
        reseeded.setdefault(r.member, {})[r.seed] = r.accuracy()
    seed_gaps = [max(v.values()) - min(v.values()) for v in reseeded.values() if len(v) > 1]
    pool_summary = {
        "size": len(base), "mean": float(pool_test.mean()), "std": float(pool_test.std(ddof=1)),
        "min": float(pool_test.min()), "max": float(pool_test.max()), "spread": float(np.ptp(pool_test)),
        "val_mean": float(np.nanmean(pool_val)), "val_min": float(np.nanmin(pool_val)),
        "val_max": float(np.nanmax(pool_val)), "median_train_seconds": train_seconds,
        "reseeded": len(seed_gaps), "training_seed_gap_mean": float(np.mean(seed_gaps)) if seed_gaps else None,
        "training_seed_gap_max": float(np.max(seed_gaps)) if seed_gaps else None,
        "best_by_val": int(np.nanargmax(pool_val)), "best_by_val_test": float(pool_test[int(np.nanargmax(pool_val))]),
        "members": [{"member": r.member, "params": r.params, "val": r.val_score, "test": float(t),
                     "test_seeds": reseeded[r.member]} for r, t in zip(base, pool_test)],
    }

    by_run = {(r.method, r.seed, r.member): r for r in searched}
    rows = []
    for found in searches:
        first = by_run[(found.strategy, found.seed, 0)]
        trained = [r for (m, s, _), r in by_run.items() if m == found.strategy and s == found.seed]
        test = first.accuracy()
        pipeline_seconds = found.search_seconds + first.train_seconds
        k = min(len(base), max(1, math.ceil(pipeline_seconds / train_seconds)))
        subset = np.random.default_rng(1000 + found.seed).choice(len(base), size=k, replace=False)
        pick = int(subset[np.argmax(np.nan_to_num(pool_val[subset], nan=-1.0))])
        searched_boot = np.array([first.accuracy(i) for i in resamples])
        versus_mean = searched_boot - pool_boot.mean(axis=0)
        versus_pick = searched_boot - pool_boot[pick]
        test_mcnemar = mcnemar_exact(first.correct(), base[pick].correct())
        row: dict[str, Any] = {
            "strategy": found.strategy, "seed": found.seed, "params": first.params, "val": first.val_score,
            "test": test, "test_seeds": [r.accuracy() for r in sorted(trained, key=lambda r: r.member)],
            "percentile": percentile_in_pool(test, pool_test),
            "minus_pool_mean": test - float(pool_test.mean()), "minus_pool_mean_ci": _interval(versus_mean),
            "random_search_k": k, "random_search_member": pick, "random_search_test": float(pool_test[pick]),
            "minus_random_search": test - float(pool_test[pick]), "minus_random_search_ci": _interval(versus_pick),
            "mcnemar_vs_random_search": asdict(test_mcnemar),
            "search_seconds": found.search_seconds, "train_seconds": first.train_seconds,
            "entropy": normalized_entropy(found.probabilities) if found.probabilities else None,
            "choices": found.architecture["choices"], "ranking": {},
        }
        scores = {}
        if found.probabilities:
            scores["log_probability"] = [log_probability(found.probabilities, r.architecture["choices"]) for r in base]
        if found.path_scores:
            scores["supernet_accuracy"] = [found.path_scores[r.member] for r in base]
        row["picks"] = {}
        row["scores"] = scores
        for name, predicted in scores.items():
            # Selection among the pool's paths by the search's score (random search with weight sharing for
            # the supernet's accuracy): the pick was trained stand-alone already, so it costs no training.
            pick = int(np.argmax(predicted))
            row["picks"][name] = {"member": pick, "test": float(pool_test[pick]),
                                  "percentile": percentile_in_pool(float(pool_test[pick]), pool_test),
                                  "minus_pool_mean": float(pool_test[pick] - pool_test.mean()),
                                  "minus_pool_mean_ci": _interval(pool_boot[pick] - pool_boot.mean(axis=0))}
            for truth_name, truth in (("val", pool_val), ("test", pool_test)):
                correlation = rank_correlations(predicted, truth, bootstrap=bootstrap, seed=seed)
                row["ranking"][f"{name}_vs_{truth_name}"] = {
                    **asdict(correlation), "precision_at_25": precision_at_top(predicted, truth, 0.25)}
        rows.append(row)

    methods = []
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        mine = [r for r in rows if r["strategy"] == strategy]
        mine_boot = np.mean([[by_run[(strategy, r["seed"], 0)].accuracy(i) for i in resamples] for r in mine], axis=0)
        exports = [json.dumps(r["choices"], sort_keys=True) for r in mine]
        method = {
            "strategy": strategy, "title": _TITLES.get(strategy, strategy), "seeds": len(mine),
            "test_mean": float(np.mean([r["test"] for r in mine])),
            "test_all_training_seeds": float(np.mean([t for r in mine for t in r["test_seeds"]])),
            "percentile_mean": float(np.mean([r["percentile"] for r in mine])),
            "minus_pool_mean": float(np.mean([r["minus_pool_mean"] for r in mine])),
            "minus_pool_mean_ci": _interval(mine_boot - pool_boot.mean(axis=0)),
            "minus_pool_mean_ci_models": _interval(_model_level_differences(
                [r["test"] for r in mine], pool_test, bootstrap, seed)),
            "minus_random_search": float(np.mean([r["minus_random_search"] for r in mine])),
            "random_search_k": float(np.mean([r["random_search_k"] for r in mine])),
            "search_minutes": float(np.mean([r["search_seconds"] for r in mine])) / 60,
            "train_minutes": float(np.mean([r["train_seconds"] for r in mine])) / 60,
            "entropy": (float(np.mean([r["entropy"] for r in mine])) if all(r["entropy"] is not None for r in mine)
                        else None),
            "same_export": max(exports.count(e) for e in exports), "distinct_exports": len(set(exports)),
            "ranking": {},
        }
        method["picks"] = {}
        for name in mine[0]["picks"]:
            picks = [r["picks"][name] for r in mine]
            pick_boot = np.mean([pool_boot[p["member"]] for p in picks], axis=0)
            method["picks"][name] = {"test": float(np.mean([p["test"] for p in picks])),
                                     "percentile": float(np.mean([p["percentile"] for p in picks])),
                                     "minus_pool_mean": float(np.mean([p["minus_pool_mean"] for p in picks])),
                                     "minus_pool_mean_ci": _interval(pick_boot - pool_boot.mean(axis=0))}
        for key in mine[0]["ranking"]:
            method["ranking"][key] = {stat: float(np.nanmean([r["ranking"][key][stat] for r in mine]))
                                      for stat in ("kendall_tau", "spearman_rho", "precision_at_25")}
        methods.append(method)

    controls_rows = [{"method": r.method, "test": r.accuracy()} for r in controls]
    return {"pool": pool_summary, "searches": rows, "methods": methods, "controls": controls_rows,
            "test_patients": len(set(test_patients)), "test_scans": len(test_patients)}
