"""Data pipeline benchmark: cold decode vs cached epochs, and the share of a CPU training step spent
waiting for data.

For each format (CC-CCII 8-bit PNG/JPG slices, MosMedData int16 NIfTI, COVID-CTset uint16 TIFF),
synthetic 512 x 512 phantoms are written in the real layout, then:

* cold: one pass of ``make_dataset(..., cache_dir=None)`` (decode, window, resize every access);
* first cached epoch: ``PersistentDataset`` decodes and writes the cache;
* cached epochs: later passes read the cache (random depth sampling and augmentation still run);

and a small 3D CNN is trained for a few steps on CPU from a ``monai.data.DataLoader`` over the
cached dataset, timing the wait for each batch against the whole step.

    .venv/bin/python benchmarks/bench_data.py --scans 4 --out benchmarks/bench_data.json
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from nni_covid3d.data import Preprocessing, load_dataset, make_dataset, write_synthetic_dataset

LAYOUTS = ("ccccii", "mosmed", "covidctset")


def epoch_seconds(dataset) -> float:
    start = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    return time.perf_counter() - start


class Tiny3DCNN(nn.Module):
    """A small 3D CNN (3 conv blocks, ~0.1 M parameters): input [B, 1, D, H, W] -> logits [B, classes]."""

    def __init__(self, num_classes: int):
        super().__init__()
        blocks, channels = [], 1
        for out in (16, 32, 64):
            blocks += [nn.Conv3d(channels, out, 3, padding=1, bias=False), nn.BatchNorm3d(out), nn.ReLU(inplace=True), nn.MaxPool3d(2)]
            channels = out
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3, 4)))


def data_wait_share(dataset, num_classes: int, *, batch_size: int, steps: int, num_workers: int) -> dict[str, float]:
    from monai.data import DataLoader

    torch.manual_seed(0)
    model = Tiny3DCNN(num_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers, drop_last=True)
    if len(loader) < steps + 1:
        raise ValueError(f"need {steps + 1} batches in one epoch, the loader has {len(loader)}")
    wait = compute = 0.0
    iterator = iter(loader)
    for step in range(steps + 1):
        t0 = time.perf_counter()
        batch = next(iterator)
        t1 = time.perf_counter()
        loss = nn.functional.cross_entropy(model(batch["image"]), batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        t2 = time.perf_counter()
        if step > 0:  # the first step starts the workers and warms up allocators
            wait += t1 - t0
            compute += t2 - t1
    del iterator
    return {"wait_s_per_step": wait / steps, "compute_s_per_step": compute / steps, "wait_share": wait / (wait + compute)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scans", type=int, default=4, help="patients per format (scans may be more)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--slices", type=int, nargs=2, default=(32, 48))
    parser.add_argument("--cached-epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12, help="training steps for the data-wait measurement")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: fair on a shared machine)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prep = Preprocessing.search()  # 16 x 64 x 64
    results = {"machine": f"{platform.processor() or platform.machine()}, torch threads {args.threads}",
               "preprocessing": prep.to_dict(), "formats": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for layout in LAYOUTS:
            root = write_synthetic_dataset(layout, tmp / layout, n_patients=args.scans, seed=0, size=args.size, slices=tuple(args.slices))
            index = load_dataset(layout, root)
            scans = index.scans
            n = len(scans)
            cold = epoch_seconds(make_dataset(scans, prep, train=True))
            cached_set = make_dataset(scans, prep, train=True, cache_dir=tmp / f"cache-{layout}")
            first = epoch_seconds(cached_set)
            cached = [epoch_seconds(cached_set) for _ in range(args.cached_epochs)]
            cached_s = min(cached)
            row = {
                "scans": n,
                "slices_per_scan": sum(len(s.paths) for s in scans) / n if layout != "mosmed" else None,
                "cold_scans_per_s": n / cold,
                "first_cached_epoch_scans_per_s": n / first,
                "cached_scans_per_s": n / cached_s,
                "cached_speedup_vs_cold": cold / cached_s,
            }
            # Training epochs are long: repeat the scans (same cache entries) so that the measured steps
            # run in one epoch, as they would on a real dataset, instead of restarting the loader.
            repeat = -(-(args.steps + 1) * args.batch_size // n)
            train_set = make_dataset(scans * repeat, prep, train=True, cache_dir=tmp / f"cache-{layout}")
            for workers in (0, 1):
                row[f"data_wait_workers{workers}"] = data_wait_share(
                    train_set, len(index.class_names), batch_size=args.batch_size, steps=args.steps, num_workers=workers
                )
            results["formats"][layout] = row
            print(f"{layout:<11} {n:>3} scans  cold {row['cold_scans_per_s']:6.2f} scans/s  "
                  f"cached {row['cached_scans_per_s']:7.1f} scans/s  x{row['cached_speedup_vs_cold']:5.1f}  "
                  f"wait share w0 {row['data_wait_workers0']['wait_share']:.1%}  w1 {row['data_wait_workers1']['wait_share']:.1%}",
                  flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
