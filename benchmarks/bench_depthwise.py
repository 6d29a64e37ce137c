"""CPU forward+backward time of CovidNet3D models: the fast depthwise backward vs PyTorch's own.

    .venv/bin/python benchmarks/bench_depthwise.py [--threads 1] [--repeats 3]

Both paths compute the same gradients (tests/search_spaces/test_ops.py); only the time differs.
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from nni_covid3d.search_spaces import build_model, random_architecture
from nni_covid3d.search_spaces.ops import DepthwiseConv3d


def step_seconds(model: nn.Module, size: tuple[int, ...], repeats: int) -> float:
    x = torch.randn(1, 1, *size)
    model(x).sum().backward()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        model.zero_grad()
        start = time.perf_counter()
        model(x).sum().backward()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fast_forward = DepthwiseConv3d.forward
    for preset, seed in (("S", 1), ("L", 2)):
        model = build_model(random_architecture({"preset": preset}, seed)).train()
        for size in ((16, 64, 64), (32, 128, 128)):
            DepthwiseConv3d.forward = fast_forward
            fast = step_seconds(model, size, args.repeats)
            DepthwiseConv3d.forward = nn.Conv3d.forward
            slow = step_seconds(model, size, args.repeats)
            DepthwiseConv3d.forward = fast_forward
            print(f"{preset} seed {seed} 1x{'x'.join(map(str, size))}: fast depthwise {fast:6.2f} s, "
                  f"PyTorch conv3d {slow:6.2f} s per forward+backward ({slow / fast:.1f}x)")


if __name__ == "__main__":
    main()
