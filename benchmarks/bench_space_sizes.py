"""Parameters, MB and FLOPs of the CovidNet3D space's extremes, next to the paper's CovidNet3D-S/L sizes.

    .venv/bin/python benchmarks/bench_space_sizes.py [--input-size 1 16 64 64]

Extremes per preset: the smallest model (every stage keeps one cell, every op skip), all-skip at full
depth (the paper's space has no depth choice), and the largest (full depth, every cell on the
candidate with the most parameters).
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import torch

from nni.mutable import CategoricalMultiple

from nni_covid3d.search_spaces import build_model, choice_domains, export_architecture, model_cost
from nni_covid3d.search_spaces.covidnet3d import normalize_config
from nni_covid3d.search_spaces.ops import make_candidate

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "covidnet3d_reported.csv"


def extreme(preset: str, kind: str) -> dict:
    """The architecture dict of one extreme: ``smallest``, ``all_skip_full_depth`` or ``largest``."""
    config = normalize_config({"preset": preset})
    choices = {}
    for label, domain in choice_domains(config).items():
        values = list(domain.values)
        if isinstance(domain, CategoricalMultiple):
            choices[label] = [values[0] if kind == "smallest" else values[-1]]
        elif kind == "largest":
            width = config["widths"][int(label[1 : label.index("_")]) - 1]
            choices[label] = max(
                values, key=lambda name: sum(p.numel() for p in make_candidate(name, width, True).parameters())
            )
        else:
            choices[label] = "skip"
    return export_architecture(config, choices)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=int, nargs=4, default=(1, 16, 64, 64))
    parser.add_argument("--reference", type=Path, default=REFERENCE, help="the papers' reported sizes (CSV)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    reported = {}
    if args.reference.is_file():
        for row in csv.DictReader(args.reference.open()):
            if row["model"].startswith("CovidNet3D"):
                reported.setdefault(row["model"], []).append(f"{float(row['size_mb']):.2f} ({row['dataset']})")
    rows = []
    for preset in ("S", "L"):
        for kind in ("smallest", "all_skip_full_depth", "largest"):
            cost = model_cost(build_model(extreme(preset, kind)), args.input_size)
            rows.append({"preset": preset, "architecture": kind, **cost.to_dict()})
            print(f"CovidNet3D-{preset} {kind:<20} {cost.params:>11,} params  {cost.size_mb:8.2f} MB  "
                  f"{cost.flops / 1e9:7.3f} GFLOPs at {'x'.join(map(str, args.input_size))}")
        print(f"  paper CovidNet3D-{preset} (searched): {', '.join(reported.get(f'CovidNet3D-{preset}', ['n/a']))} MB")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
