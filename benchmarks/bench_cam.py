"""Benchmark: how well class activation maps localise lesions on synthetic phantoms.

Writes phantoms in a dataset layout (MosMedData by default: NIfTI with spacing, lesion masks),
splits them by patient, trains each model briefly (selection on validation loss), then scores
Grad-CAM / Grad-CAM++ / CAM maps on the COVID (NCP) test scans: pointing-game hit rate (strict, and within a tolerance) and heatmap energy inside the
lesion beside the uniform-map chance level. Prints a Markdown table and writes ``results.json``.

    python benchmarks/bench_cam.py --out /tmp/bench_cam --models covidnet3d --epochs 15

``covidnet3d`` is a small architecture of the CovidNet3D space: the one in ``--arch`` (an exported
architecture file, e.g. from a GumbelDNAS search) or, without it, the fixed one below.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

#: A small CovidNet3D-space configuration for CPU runs (one cell per stage, narrow widths).
SMALL_SPACE = dict(
    preset="S", num_classes=3, widths=[16, 24, 32, 48, 64, 96], n_cells=[1, 1, 1, 1, 1, 1],
    head_channels=128, stem_channels=16, first_block_channels=8,
)


def small_architecture(seed: int, num_classes: int) -> dict:
    """An architecture of :data:`SMALL_SPACE` (random, reproducible by seed)."""
    from nni_covid3d.search_spaces import random_architecture

    return random_architecture({**SMALL_SPACE, "num_classes": num_classes}, seed=seed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["covidnet3d"], help="covidnet3d and/or baselines (mc3_18, resnet3d101, densenet3d121)")
    parser.add_argument("--arch", type=Path, help="exported architecture for covidnet3d")
    parser.add_argument("--layout", default="mosmed", choices=("mosmed", "ccccii", "covidctset"))
    parser.add_argument("--patients", type=int, default=48)
    parser.add_argument("--size", type=int, default=64, help="phantom in-plane size")
    parser.add_argument("--slices", type=int, nargs=2, default=(16, 24))
    parser.add_argument("--depth", type=int, default=16, help="model input depth")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--augment", action="store_true", help="train-time augmentation (off by default: short runs)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--balance", default="weights", choices=("none", "weights", "sampler"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=["gradcam", "gradcampp", "cam"])
    parser.add_argument("--tolerance-mm", type=float, default=8.0, help="tolerance of the second pointing-game score")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    from nni_covid3d.data import Preprocessing, load_dataset, make_dataset, make_patient_split, save_split, write_synthetic_dataset
    from nni_covid3d.explain.pipeline import score_cams
    from nni_covid3d.training.pipeline import TrainConfig, evaluate_checkpoint, train_model

    args.out.mkdir(parents=True, exist_ok=True)
    root = args.out / "phantoms"
    if not root.exists():
        write_synthetic_dataset(args.layout, root, n_patients=args.patients, seed=args.seed, size=args.size, slices=tuple(args.slices))
    index = load_dataset(args.layout, root)
    split = make_patient_split(index.scans, seed=args.seed)
    save_split(split, args.out / "split.json")
    preprocessing = Preprocessing(depth=args.depth, height=args.size, width=args.size, augment=args.augment)
    train = make_dataset(split["train"], preprocessing, train=True, cache_in_memory=True, seed=args.seed)
    val = make_dataset(split["val"], preprocessing, train=False, cache_in_memory=True)
    test = make_dataset(split["test"], preprocessing, train=False, cache_in_memory=True)
    results = {"command": vars(args) | {"out": str(args.out), "arch": str(args.arch) if args.arch else None},
               "split": {k: len(v) for k, v in split.items()}, "models": {}}
    for name in args.models:
        arch = None
        if name == "covidnet3d":
            from nni_covid3d.search_spaces import load_architecture

            arch = load_architecture(args.arch) if args.arch else small_architecture(args.seed, len(index.class_names))
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed, balance=args.balance,
                             progress=False, accelerator="cpu", devices=1, monitor="val_loss")
        started = time.time()
        trained = train_model(name, train, val, args.out / name, class_names=index.class_names, config=config,
                              arch=arch, preprocessing=preprocessing.to_dict())
        train_s = time.time() - started
        evaluation = evaluate_checkpoint(trained.best_checkpoint, test, out_dir=args.out / name / "eval_test", progress=False)
        started = time.time()
        strict = score_cams(trained.best_checkpoint, split["test"], out_dir=args.out / name / "cam", methods=args.methods, n_overlays=3)
        tolerant = score_cams(trained.best_checkpoint, split["test"], methods=args.methods, tolerance_mm=args.tolerance_mm)
        cam_s = time.time() - started
        results["models"][name] = {
            "train_seconds": round(train_s, 1), "cam_seconds": round(cam_s, 1), "n_scans": strict["n_scans"],
            "test_accuracy": evaluation.get("accuracy") if isinstance(evaluation, dict) else None,
            "methods": {m: {"layer": strict[m]["layer"], "feature_shape": strict[m]["feature_shape"],
                            "hit_rate": strict[m]["hit_rate"], f"hit_rate_{args.tolerance_mm:g}mm": tolerant[m]["hit_rate"],
                            "energy_share": strict[m]["energy_share"], "chance_energy": strict[m]["chance_energy"]}
                        for m in args.methods},
        }
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"| model | method | layer (feature D×H×W) | hit rate | hit rate ≤{args.tolerance_mm:g} mm | energy in lesion | uniform map | test acc |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results["models"].items():
        for m, s in r["methods"].items():
            acc = f"{r['test_accuracy']:.2f}" if r["test_accuracy"] is not None else "-"
            print(f"| {name} | {m} | {s['layer']} ({'×'.join(map(str, s['feature_shape']))}) | {s['hit_rate']:.2f} | "
                  f"{s[f'hit_rate_{args.tolerance_mm:g}mm']:.2f} | {s['energy_share']:.3f} | {s['chance_energy']:.3f} | {acc} |")
    print(f"({r['n_scans']} COVID test scans with lesion masks; results in {args.out / 'results.json'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
