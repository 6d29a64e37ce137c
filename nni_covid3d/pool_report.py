"""The pool protocol's outputs: ``pool.md``, ``pool.json``, ``runs.csv`` and its two plots."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["write_pool_report", "markdown_pool_report"]


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def _ci(interval: Sequence[float]) -> str:
    return f"[{100 * interval[0]:+.1f}, {100 * interval[1]:+.1f}]"


def _corr(entry: Mapping[str, Any] | None) -> str:
    if not entry or np.isnan(entry["kendall_tau"]):
        return "–"
    if "kendall_lo" in entry:
        return f"{entry['kendall_tau']:+.2f} [{entry['kendall_lo']:+.2f}, {entry['kendall_hi']:+.2f}]"
    return f"{entry['kendall_tau']:+.2f}"


def markdown_pool_report(summary: Mapping[str, Any]) -> str:
    """The pool protocol's summary as Markdown tables."""
    from nni_covid3d.tables import markdown_table

    context, pool = summary["context"], summary["pool"]
    lines = [f"# Pool benchmark: {context['dataset_title']}", "",
             f"Split (by patient): {context['split_sizes']} (test = the separate cohort {context['test_root']}). "
             f"Input {context['input_size']}. Random pool: {pool['size']} uniform draws within "
             f"±{context['size_tolerance']:.0%} of the space's median of {context['median_params']:,.0f} parameters, "
             f"trained once with the shared recipe ({pool['reseeded']} of them with a second training seed). "
             f"Every model selected on validation and tested once on {summary['test_scans']} scans of "
             f"{summary['test_patients']} patients; intervals: 95% bootstrap over test patients (paired; the same "
             f"resamples for every model), over search seeds and pool members together where marked (it carries "
             f"the spread between seeds), over the pool's architectures for τ. "
             f"Wall time {60 * context['wall_hours']:.1f} min.", "",
             "## The random pool", "",
             markdown_table([{
                 "members": pool["size"], "mean": _pct(pool["mean"]), "std": _pct(pool["std"]),
                 "min": _pct(pool["min"]), "max": _pct(pool["max"]), "spread": _pct(pool["spread"]),
                 "val": f"{_pct(pool['val_min'])}–{_pct(pool['val_max'])}",
                 "gap": f"{_pct(pool['training_seed_gap_mean'])} / {_pct(pool['training_seed_gap_max'])}",
                 "best_val": _pct(pool["best_by_val_test"]),
                 "train_min": f"{pool['median_train_seconds'] / 60:.2f}"}],
                 (("members", "Members"), ("mean", "Test acc % mean"), ("std", "std"), ("min", "min"), ("max", "max"),
                  ("spread", "spread (max − min)"), ("val", "Val acc % range"),
                  ("gap", "Training-seed gap, mean / max (points)"), ("best_val", "Best-by-val member's test %"),
                  ("train_min", "Train min (median)"))).rstrip(), "",
             "## Searched models against the pool", "",
             markdown_table([{
                 "method": m["title"], "seeds": m["seeds"], "test": _pct(m["test_mean"]),
                 "all": _pct(m["test_all_training_seeds"]), "percentile": f"{m['percentile_mean']:.0f}",
                 "vs_mean": f"{_pct(m['minus_pool_mean'], True)} {_ci(m['minus_pool_mean_ci'])}",
                 "vs_mean_models": _ci(m["minus_pool_mean_ci_models"]),
                 "vs_rs": f"{_pct(m['minus_random_search'], True)} (k = {m['random_search_k']:.1f})",
                 "entropy": "–" if m["entropy"] is None else f"{m['entropy']:.3f}",
                 "exports": f"{m['same_export']} of {m['seeds']} ({m['distinct_exports']} distinct)",
                 "search": f"{m['search_minutes']:.2f}", "train": f"{m['train_minutes']:.2f}"}
                 for m in summary["methods"]],
                 (("method", "Method"), ("seeds", "Search seeds"), ("test", "Test acc % (training seed 0)"),
                  ("all", "all training seeds"), ("percentile", "Percentile in pool (mean)"),
                  ("vs_mean", "− pool mean [95%, test patients]"), ("vs_mean_models", "[95%, seeds and pool]"),
                  ("vs_rs", "− random search at equal compute"),
                  ("entropy", "Final norm. entropy"), ("exports", "Same export"), ("search", "Search min"),
                  ("train", "Train min"))).rstrip(), "",
             "## Per search seed", "",
             markdown_table([{
                 "method": r["strategy"], "seed": r["seed"], "params": r["params"], "val": _pct(r["val"]),
                 "test": " / ".join(_pct(t) for t in r["test_seeds"]), "percentile": f"{r['percentile']:.0f}",
                 "vs_mean": f"{_pct(r['minus_pool_mean'], True)} {_ci(r['minus_pool_mean_ci'])}",
                 "rs": f"k={r['random_search_k']}: #{r['random_search_member']} {_pct(r['random_search_test'])}",
                 "vs_rs": f"{_pct(r['minus_random_search'], True)} {_ci(r['minus_random_search_ci'])}",
                 "mcnemar": (f"{r['mcnemar_vs_random_search']['only_first']}/{r['mcnemar_vs_random_search']['only_second']}"
                             f", p={r['mcnemar_vs_random_search']['p_value']:.3g}"),
                 "entropy": "–" if r["entropy"] is None else f"{r['entropy']:.3f}"} for r in summary["searches"]],
                 (("method", "Strategy"), ("seed", "Seed"), ("params", "Params"), ("val", "Val %"),
                  ("test", "Test % per training seed"), ("percentile", "Percentile"), ("vs_mean", "− pool mean [95%]"),
                  ("rs", "Random search pick"), ("vs_rs", "− random search [95%]"),
                  ("mcnemar", "McNemar (only searched / only pick right)"), ("entropy", "Norm. entropy"))).rstrip(),
             "", "## Does the search rank the pool as training does?", "",
             "Kendall τ of the search's score of each pool architecture against its stand-alone accuracy "
             "(mean over search seeds; per seed with its 95% bootstrap interval in `pool.json`); P@25%: share of the "
             "search's top quarter that is in the true top quarter by test accuracy (chance 0.25).", ""]
    ranking = []
    for m in summary["methods"]:
        for score in ("log_probability", "supernet_accuracy"):
            if f"{score}_vs_val" not in m["ranking"]:
                continue
            ranking.append({"method": m["title"], "score": score.replace("_", " "),
                            "val": _corr(m["ranking"][f"{score}_vs_val"]),
                            "test": _corr(m["ranking"][f"{score}_vs_test"]),
                            "rho": f"{m['ranking'][f'{score}_vs_test']['spearman_rho']:+.2f}",
                            "p25": f"{m['ranking'][f'{score}_vs_test']['precision_at_25']:.2f}"})
    for r in summary["searches"]:
        for key, entry in r["ranking"].items():
            if key.endswith("_vs_val"):
                ranking.append({"method": f"{r['strategy']} seed {r['seed']}", "score": key[:-7].replace("_", " "),
                                "val": _corr(entry), "test": _corr(r["ranking"][key[:-3] + "test"]),
                                "rho": f"{r['ranking'][key[:-3] + 'test']['spearman_rho']:+.2f}",
                                "p25": f"{r['ranking'][key[:-3] + 'test']['precision_at_25']:.2f}"})
    picks = [{"method": m["title"], "score": name.replace("_", " "), "test": _pct(p["test"]),
              "percentile": f"{p['percentile']:.0f}",
              "vs_mean": f"{_pct(p['minus_pool_mean'], True)} {_ci(p['minus_pool_mean_ci'])}"}
             for m in summary["methods"] for name, p in m.get("picks", {}).items()]
    if ranking:
        lines.append(markdown_table(ranking, (("method", "Search"), ("score", "Search's score"),
                                              ("val", "τ vs stand-alone val"), ("test", "τ vs stand-alone test"),
                                              ("rho", "ρ vs test"), ("p25", "P@25% (test)"))).rstrip())
    if picks:
        lines += ["", "The pool member each search score ranks first (mean over search seeds; stand-alone test accuracy, "
                  "no training beyond the pool's):", "",
                  markdown_table(picks, (("method", "Search"), ("score", "Picked by"), ("test", "Test acc %"),
                                         ("percentile", "Percentile"), ("vs_mean", "− pool mean [95%]"))).rstrip()]
    lines += ["", "## Controls without a 3D model", "",
              markdown_table([{"method": c["method"], "test": _pct(c["test"])} for c in summary["controls"]],
                             (("method", "Control"), ("test", "Test acc %"))).rstrip()]
    return "\n".join(lines) + "\n"


def _plots(summary: Mapping[str, Any], out: Path) -> None:
    from nni_covid3d.metrics import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    members = summary["pool"]["members"]
    ax.scatter([m["params"] / 1e6 for m in members], [100 * m["test"] for m in members], color="grey", alpha=0.5,
               label="random pool (stand-alone)")
    markers = "os^vD<>ph"
    for i, strategy in enumerate(dict.fromkeys(r["strategy"] for r in summary["searches"])):
        rows = [r for r in summary["searches"] if r["strategy"] == strategy]
        ax.scatter([r["params"] / 1e6 for r in rows], [100 * r["test"] for r in rows], marker=markers[i % len(markers)],
                   s=60, label=f"{strategy} (one marker per search seed)")
    ax.axhline(100 * summary["pool"]["mean"], color="grey", linestyle=":", linewidth=1, label="pool mean")
    ax.set_xlabel("parameters (millions)")
    ax.set_ylabel("test accuracy on the separate cohort (%)")
    ax.set_title("Searched models against the random pool")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(out / "pool_accuracy.png", dpi=120)
    plt.close(fig)

    panels = [(strategy, score) for strategy in dict.fromkeys(r["strategy"] for r in summary["searches"])
              for score in ("log_probability", "supernet_accuracy")
              if any(score in r.get("scores", {}) for r in summary["searches"] if r["strategy"] == strategy)]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.2 * max(1, len(panels)), 4), squeeze=False)
    truth = [100 * m["val"] if m["val"] is not None else np.nan for m in members]
    for ax, (strategy, score) in zip(axes[0], panels):
        for r in summary["searches"]:
            if r["strategy"] == strategy and score in r.get("scores", {}):
                entry = r["ranking"][f"{score}_vs_val"]
                ax.scatter([(100 if score == "supernet_accuracy" else 1) * v for v in r["scores"][score]], truth,
                           s=14, alpha=0.7,
                           label=f"seed {r['seed']}: τ={entry['kendall_tau']:+.2f}")
        ax.set_xlabel(f"{strategy}: {score.replace('_', ' ')}")
        ax.set_ylabel("stand-alone validation accuracy (%)")
        ax.legend(fontsize=6, loc="best")
    fig.suptitle("Search preference against stand-alone accuracy (pool architectures)")
    fig.tight_layout()
    fig.savefig(out / "pool_ranking.png", dpi=120)
    plt.close(fig)


def write_pool_report(summary: dict[str, Any], records: Sequence[Any], out: Path) -> None:
    """Write ``pool.md``, ``pool.json``, ``runs.csv`` (one row per trained model of ``records``),
    ``pool_accuracy.png`` and ``pool_ranking.png`` to ``out``."""
    from nni_covid3d.benchmark import write_runs_csv

    (out / "pool.md").write_text(markdown_pool_report(summary))
    (out / "pool.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    write_runs_csv(out / "runs.csv", records)
    _plots(summary, out)
