"""Planted-problem suite: how often each one-shot strategy exports the known best architecture.

Every (problem, method, budget, seed) is one search on the CPU with one intra-op thread (workers run
in parallel processes). Budgets are multiples of the problem's base epochs. Reports the success rate
with a 95% Wilson interval, mean wall time and candidate passes (forward+backward, forward only, and
forward-equivalents = 3 x trained + forward-only) per search.

    .venv/bin/python benchmarks/bench_planted.py --seeds 0-9 --budgets 0.5,1 --out benchmarks/bench_planted.json
    .venv/bin/python benchmarks/bench_planted.py --table benchmarks/bench_planted.json

Settings (e.g. GumbelDNAS's arc learning rate) are chosen on seeds 100-109 and scored on seeds 0-9.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

#: name -> (registry strategy, constructor kwargs). NNI's strategies run at their defaults.
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "gumbel-dnas": ("gumbel-dnas", {}),
    "gumbel-dnas/1-path": ("gumbel-dnas", {"arch_samples": 1}),
    "gumbel-dnas/weights-follow-logits": ("gumbel-dnas", {"weight_sampling": "gumbel"}),
    "gumbel-dnas/straight-through+fair": ("gumbel-dnas", {"arch_estimator": "straight_through"}),
    # The method and defaults before the suite existed.
    "gumbel-dnas/before": ("gumbel-dnas", {"arch_estimator": "straight_through", "weight_sampling": "gumbel",
                                           "warmup_epochs": 0, "arc_learning_rate": 3e-4}),
    "darts": ("darts", {}),
    "gumbel-darts": ("gumbel-darts", {}),
    "proxyless": ("proxyless", {}),
    "random-oneshot": ("random-oneshot", {}),
}


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "nni"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _one(job: tuple[str, str, dict[str, Any], float, int]) -> dict[str, Any]:
    problem_name, method, extra, budget, seed = job
    _quiet()
    import torch

    torch.set_num_threads(1)
    from nni_covid3d.strategies.planted import PROBLEMS, run_planted

    problem = PROBLEMS[problem_name]
    strategy, kwargs = METHODS[method]
    epochs = max(1, round(problem.epochs * budget))
    result = run_planted(problem, strategy, seed, epochs=epochs, **{**kwargs, **extra})
    row = asdict(result)
    row.update(method=method, budget=budget, extra=extra)
    return row


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        key = (row["problem"], row["method"], json.dumps(row["extra"], sort_keys=True), row["budget"])
        groups[key].append(row)
    summary = []
    for (problem, method, extra, budget), group in sorted(groups.items()):
        wins = sum(r["success"] for r in group)
        low, high = wilson(wins, len(group))
        summary.append(dict(
            problem=problem, method=method, extra=json.loads(extra), budget=budget, epochs=group[0]["epochs"],
            seeds=len(group), success=wins / len(group), ci95=(round(low, 2), round(high, 2)),
            wall_s=statistics.mean(r["wall_s"] for r in group),
            trained_passes=statistics.mean(r["trained_passes"] for r in group),
            forward_passes=statistics.mean(r["forward_passes"] for r in group),
            forward_equivalents=statistics.mean(r["forward_equivalents"] for r in group),
        ))
    return summary


def markdown(summary: list[dict[str, Any]]) -> str:
    lines = ["| problem | method | extra | epochs | success | 95% CI | wall s | fwd+bwd passes | fwd-only passes | fwd-equiv. |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        extra = ", ".join(f"{k}={v}" for k, v in s["extra"].items())
        lines.append(
            f"| {s['problem']} | {s['method']} | {extra} | {s['epochs']} | {round(100 * s['success'])}% ({s['seeds']}) | "
            f"{s['ci95'][0]:.2f}–{s['ci95'][1]:.2f} | {s['wall_s']:.2f} | {s['trained_passes']:.0f} | "
            f"{s['forward_passes']:.0f} | {s['forward_equivalents']:.0f} |")
    return "\n".join(lines)


def _seeds(spec: str) -> list[int]:
    if "-" in spec:
        first, last = spec.split("-")
        return list(range(int(first), int(last) + 1))
    return [int(s) for s in spec.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", default="information,capacity,ranking,chain,depth,covidnet3d")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="0-9", help="e.g. 0-9 or 100-109 or 1,2,3")
    parser.add_argument("--budgets", default="1", help="multiples of each problem's base epochs, e.g. 0.5,1,2")
    parser.add_argument("--extra", default="{}", help="JSON of constructor kwargs added to every method (for sweeps)")
    parser.add_argument("--sweep", default=None,
                        help="KEY=V1,V2,...: one run per value of a constructor kwarg (GumbelDNAS methods only)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/bench_planted.json"))
    parser.add_argument("--table", type=Path, help="print the Markdown table of a JSON written before, and exit")
    args = parser.parse_args()
    if args.table:
        print(markdown(json.loads(args.table.read_text())["summary"]))
        return
    extras: list[dict[str, Any]] = [json.loads(args.extra)]
    if args.sweep:
        key, values = args.sweep.split("=")
        extras = [{**extras[0], key: json.loads(v)} for v in values.split(",")]
    jobs = []
    for problem in args.problems.split(","):
        for method in args.methods.split(","):
            for extra in extras if METHODS[method][0] == "gumbel-dnas" else [json.loads(args.extra)]:
                for budget in [float(b) for b in args.budgets.split(",")]:
                    jobs += [(problem, method, extra, budget, seed) for seed in _seeds(args.seeds)]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(_one, jobs, chunksize=1))
    summary = summarise(rows)
    import torch
    import nni

    record = dict(
        command=" ".join([Path(sys.executable).name, *sys.argv]), machine=platform.node(), cpus=os.cpu_count(),
        workers=args.workers, load_avg=os.getloadavg(), wall_s=time.perf_counter() - start,
        versions=dict(torch=torch.__version__, nni=nni.__version__, python=platform.python_version()),
        summary=summary, runs=rows,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1, default=str) + "\n")
    print(markdown(summary))
    print(f"\n{len(rows)} searches in {record['wall_s']:.0f} s; written to {args.out}")


if __name__ == "__main__":
    main()
