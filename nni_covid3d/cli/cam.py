"""``nni-covid3d cam``: score a checkpoint's class activation maps against lesion masks on a split,
and write overlays for a few scans."""
from __future__ import annotations

import argparse
from pathlib import Path

from nni_covid3d.data import DATASETS
from nni_covid3d.precision import CPU_PRECISIONS, add_precision_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "cam",
        help="class activation maps of a checkpoint on a split: pointing game and energy share vs lesion masks",
        description=(
            "Compute Grad-CAM / Grad-CAM++ / CAM / occlusion-sensitivity maps of a trained checkpoint on the COVID scans of a split that "
            "have lesion masks, score them (pointing-game hit rate, heatmap energy inside the lesion) and write "
            "NIfTI heatmaps, montages and slice-relevance plots for the first scans. The dataset and split "
            "default to those stored in the checkpoint."
        ),
    )
    parser.add_argument("--ckpt", "--model", dest="ckpt", type=Path, required=True, help="nni-covid3d checkpoint (.ckpt)")
    parser.add_argument("--dataset", choices=DATASETS, help="dataset name (default: the checkpoint's)")
    parser.add_argument("--root", type=Path, help="dataset root (default: the checkpoint's)")
    parser.add_argument("--task", default=None, help="dataset task, e.g. mosmed 'binary' or 'severity' (default: the checkpoint's)")
    parser.add_argument("--split-file", type=Path, help="split JSON (default: the checkpoint's)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test", "all"), help="which scans (default: test)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--methods", nargs="+", default=["gradcam"], choices=("gradcam", "gradcampp", "cam", "occlusion"))
    parser.add_argument("--layer", default=None, help="target layer (default per model family; 'auto': deepest layer keeping >= 4 slices)")
    parser.add_argument("--occlusion-box", type=float, nargs=3, metavar=("FD", "FH", "FW"),
                        help="occlusion box as fractions of the model input's depth, height and width "
                             "(default: nni_covid3d.explain.cam.OCCLUSION_BOX, 0.5 0.125 0.125)")
    parser.add_argument("--tolerance-mm", type=float, default=0.0, help="pointing-game tolerance around the lesion in mm (default 0: strict)")
    add_precision_argument(parser, CPU_PRECISIONS)
    parser.add_argument("--overlays", type=int, default=3, help="write CAM files for this many scored scans (default 3)")
    parser.set_defaults(func=run)


def select_scans(args: argparse.Namespace, meta: dict) -> list:
    """The scans of the requested split, from the command line or the checkpoint's data source."""
    from nni_covid3d.cli import UserError
    from nni_covid3d.data import load_dataset, load_split

    source = meta.get("data") or {}
    dataset = args.dataset or source.get("dataset")
    root = args.root or (Path(source["root"]) if source.get("root") else None)
    if not dataset or root is None:
        raise UserError(f"{args.ckpt} records no dataset: give --dataset and --root")
    index = load_dataset(dataset, root, task=args.task or source.get("task"))
    if args.split == "all":
        return index.scans
    split_file = args.split_file or (Path(source["split_file"]) if source.get("split_file") else None)
    if split_file is None:
        raise UserError(f"{args.ckpt} records no split file: give --split-file, or --split all")
    return load_split(split_file, index.scans)[args.split]


def run(args: argparse.Namespace) -> int:

    from nni_covid3d.explain.cam import OCCLUSION_BOX
    from nni_covid3d.explain.pipeline import score_cams
    from nni_covid3d.training import load_model

    model, meta = load_model(args.ckpt)
    scans = select_scans(args, meta)
    report = score_cams(
        (model, meta), scans, out_dir=args.out, methods=args.methods, target_layer=args.layer,
        tolerance_mm=args.tolerance_mm, n_overlays=args.overlays, occlusion_box=args.occlusion_box or OCCLUSION_BOX,
        precision=args.precision,
    )
    print(f"{meta.get('model_name')}: {report['n_scans']} scans with lesion masks, tolerance {args.tolerance_mm} mm")
    within = f" within {args.tolerance_mm:g} mm" if args.tolerance_mm > 0 else ""
    for method in args.methods:
        r = report[method]
        print(
            f"  {method:<10} layer {r['layer']} (feature map {'x'.join(map(str, r['feature_shape']))}): "
            f"hit rate {r['hit_rate']:.3f}{within} (strict {r['hit_rate_strict']:.3f}; another scan's map "
            f"{r['shuffled_hit_rate']:.3f}, random point {r['chance_hit_rate']:.3f}), "
            f"energy in lesion {r['energy_share']:.3f} (uniform map: {r['chance_energy']:.3f})"
        )
    print(f"wrote {args.out / 'cam_scores.json'}, {args.out / 'cam_scores.csv'}" + (f" and overlays under {args.out}/<method>/" if args.overlays else ""))
    return 0
