"""``nni-covid3d predict``: class probabilities for a new scan (or a folder of scans), optional CAMs."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from nni_covid3d.precision import CPU_PRECISIONS, add_precision_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify a CT scan (NIfTI, DICOM folder, PNG/TIFF slice folder) or a folder of scans",
        description=(
            "Classify INPUT with a trained checkpoint, using the preprocessing stored in it. INPUT is a NIfTI "
            "file, a DICOM series folder or a folder of PNG/JPG/TIFF slices; a folder holding several such "
            "scans (NIfTI files or sub-folders) is predicted in batch and written as CSV."
        ),
    )
    parser.add_argument("input", type=Path, metavar="INPUT", help="scan file/folder, or a folder of scans")
    parser.add_argument("--ckpt", "--model", dest="ckpt", type=Path, required=True, help="nni-covid3d checkpoint (.ckpt)")
    parser.add_argument("--cam", type=Path, metavar="OUTDIR", help="write CAM files (NIfTI heatmap, montage, slice relevance) here")
    parser.add_argument("--cam-method", default="gradcam", choices=("gradcam", "gradcampp", "cam", "occlusion"))
    parser.add_argument("--cam-layer", default=None, help="target layer name ('auto': deepest layer keeping >= 4 slices)")
    add_precision_argument(parser, CPU_PRECISIONS)
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--csv", type=Path, default=None, help="batch mode: CSV to write (default: predictions.csv)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nni_covid3d.predict import Predictor, format_prediction, is_batch_folder, to_json, write_csv

    if not os.path.lexists(args.input):  # a broken link exists as an entry: the readers name what is wrong with it
        raise FileNotFoundError(f"input {args.input} does not exist")
    predictor = Predictor(args.ckpt, cam_method=args.cam_method, cam_layer=args.cam_layer, precision=args.precision)
    if args.input.is_dir() and is_batch_folder(args.input):
        predictions, failures = predictor.predict_batch(args.input, args.cam)
        csv_path = write_csv(args.csv or Path("predictions.csv"), predictor.class_names, predictions, failures)
        if args.json:
            print(to_json(predictions))
        else:
            for prediction in predictions:
                print(format_prediction(prediction))
        for source, message in failures:
            print(f"nni-covid3d predict: error: {message}", file=sys.stderr)
        print(f"wrote {csv_path} ({len(predictions)} scans, {len(failures)} failed)", file=sys.stderr)
        return 1 if failures else 0
    prediction = predictor.predict(args.input, args.cam)
    print(to_json(prediction) if args.json else format_prediction(prediction))
    return 0
