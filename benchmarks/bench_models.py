"""Size, FLOPs and CPU latency of the compared models at one input size (what `compare` reports).

    python benchmarks/bench_models.py --depth 32 --size 64 --threads 1 --out benchmarks/bench_models.json

CovidNet3D rows use the S and L presets' default-width space with every cell at its largest
candidate (``mbconv_k7_e4``, all cells): an upper bound of what the search can export.
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from nni_covid3d.search_spaces.cost import measure_cost
from nni_covid3d.models import get_model


def largest_arch(preset: str) -> dict:
    from nni_covid3d.search_spaces import random_architecture

    arch = random_architecture({"preset": preset}, 0)
    n_cells = arch["space"]["n_cells"]
    arch["choices"] = {
        # s<i>_depth picks how many of stage i's cells run (index = count - 1): all of them.
        label: [n_cells[int(label[1]) - 1] - 1] if label.endswith("_depth") else "mbconv_k7_e4"
        for label in arch["choices"]
    }
    return arch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--depth", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(0)
    shape = (1, args.depth, args.size, args.size)
    rows = []
    models = [("resnet3d101", None), ("densenet3d121", None), ("mc3_18", None),
              ("covidnet3d-S (largest)", largest_arch("S")), ("covidnet3d-L (largest)", largest_arch("L"))]
    for name, arch in models:
        model = get_model("covidnet3d" if arch else name, num_classes=3, in_channels=1, arch=arch)
        cost = measure_cost(model, shape, latency_repeats=args.repeats, threads=args.threads)
        rows.append({"model": name, **cost})
        print(f"{name:<24} {cost['params'] / 1e6:7.2f}M {cost['size_mb']:8.2f} MB {cost['gflops']:8.2f} GFLOPs "
              f"{cost['latency_ms']:9.1f} ms/scan", flush=True)
    if args.out:
        args.out.write_text(json.dumps({"input": list(shape), "threads": args.threads, "repeats": args.repeats,
                                        "cpu": platform.processor() or platform.machine(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
