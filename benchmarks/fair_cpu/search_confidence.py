"""How sure was the search, and how far apart are the architectures it chose between?

    python benchmarks/fair_cpu/search_confidence.py bench-ccccii bench-covidctset bench-mosmed

For each benchmark folder (``nni-covid3d benchmark --out``) and seed: the GumbelDNAS export's
confidence (per choice, the largest final probability and the normalised entropy of the
distribution, 1 = uniform), and the spread of the retrained models' validation and test accuracy
(searched, the K size-matched random architectures), so that a difference between methods can be
read against the spread between architectures of the same space.
"""
from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path


def confidence(probs: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean over choices of the top probability, of top / uniform, and of the normalised entropy."""
    top, ratio, entropy = [], [], []
    for dist in probs.values():
        values = list(dist.values())
        n = len(values)
        top.append(max(values))
        ratio.append(max(values) * n)
        entropy.append(-sum(p * math.log(p) for p in values if p > 0) / math.log(n))
    return {"top": statistics.mean(top), "top_over_uniform": statistics.mean(ratio),
            "entropy": statistics.mean(entropy), "choices": len(probs)}


def accuracy(record: dict) -> float:
    labels, probs = record["labels"], record["probs"]
    return sum(int(max(range(len(p)), key=p.__getitem__) == y) for y, p in zip(labels, probs)) / len(labels)


def main(folders: list[str]) -> None:
    print("| benchmark | seed | export: mean top prob. (top / uniform) | normalised entropy | "
          "searched val / test % | random val % (each) | random test % (each) |")
    print("|---|---|---|---|---|---|---|")
    for folder in map(Path, folders):
        for search in sorted((folder / "runs" / "gumbel-dnas").glob("seed*/")):
            seed = search.name
            probs_path = search / "search" / "arch_probs.json"
            if not probs_path.is_file() or not (search / "record.json").is_file():
                continue
            c = confidence(json.loads(probs_path.read_text()))
            searched = json.loads((search / "record.json").read_text())
            members = [json.loads(p.read_text()) for p in sorted((folder / "runs" / "random").glob(f"{seed}-*/record.json"))]
            rand_val = ", ".join(f"{100 * m['val_score']:.1f}" for m in members)
            rand_test = ", ".join(f"{100 * accuracy(m):.1f}" for m in members)
            print(f"| {folder.name} | {seed} | {c['top']:.2f} ({c['top_over_uniform']:.2f}x) | {c['entropy']:.3f} | "
                  f"{100 * searched['val_score']:.1f} / {100 * accuracy(searched):.1f} | {rand_val} | {rand_test} |")


if __name__ == "__main__":
    main(sys.argv[1:])
