"""The NNI trial entry point: ``python -m nni_covid3d.trial MODE [options]``.

nnictl (NNI 3.0) runs HPO-style experiments only, so architecture search, baselines and DNAS runs
reach the web UI as trials of this module. Each mode reads its tuner parameters with
``nni.get_next_parameter()`` (``--params JSON`` outside NNI), trains briefly, reports validation
accuracy per epoch and at the end (``{"default": val_acc, "size_mb": ..., ...}``) through
:class:`~nni_covid3d.nnictl.NniReporter`, and writes
``result.json`` (and ``architecture.json`` where there is one) into ``$NNI_OUTPUT_DIR``.

Modes
-----
``arch``
    Multi-trial architecture search: the parameters are one sample of the CovidNet3D search space
    as an nnictl search space (``search_spaces/covidnet3d_S.json``); the trial rebuilds that
    architecture and trains it. An invalid sample fails the trial with a message in its stderr.
``baseline``
    One cell of a model x dataset grid (parameters ``model``, ``dataset``): trains the model, then
    evaluates it once on the held-out test patients (reported as extra ``test_*`` fields).
``dnas``
    One GumbelDNAS search with tuner-chosen ``tau_init``, ``tau_final``, ``arc_learning_rate``
    (optionally ``warmup_epochs``, ``learning_rate``); stores the exported architecture. Under
    NNI it checkpoints every epoch in ``$NNI_OUTPUT_DIR/search/checkpoints``, so that a trial
    stopped by ``nnictl stop`` continues its search when ``nnictl resume`` reruns it.

Data: ``--data-root`` points at a real dataset; without it the trial writes small synthetic
phantoms (in the dataset's real on-disk layout) once into ``--cache-dir`` and uses them.

Under NNI the process that NNI starts only supervises: the trial (parameters, training, metrics)
runs in a child ``python -m nni_covid3d.nnictl.trial`` with ``NNI_COVID3D_TRIAL_WORKER=1``. A
training process killed by a signal (e.g. SIGKILL from the out-of-memory killer) thus ends the
trial FAILED, exit code ``128 + signal``, with one line in its stderr saying what happened; NNI
3.0 would otherwise report it USER_CANCELED with nothing in its logs. See
:mod:`nni_covid3d.nnictl.supervise`. Outside NNI (``--params``) the trial runs in this process.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import nni_covid3d  # noqa: F401  (filters NNI's known import warnings)
from nni_covid3d.data import DATASETS
from nni_covid3d.devices import add_device_arguments, add_loader_arguments
from nni_covid3d.nnictl.supervise import WORKER_ENV, launched_by_nni, should_supervise, supervise
from nni_covid3d.precision import check_precision

if TYPE_CHECKING:
    from nni_covid3d.nnictl.reporter import NniReporter
    from nni_covid3d.search import SearchData

# Torch, Lightning and NNI are imported inside the functions that train: under NNI this module
# first runs as the small supervising parent (nni_covid3d.nnictl.supervise), which trains nothing.

__all__ = ["main", "build_parser", "TrialError", "ensure_synthetic_data", "DEFAULT_CACHE_DIR"]

DEFAULT_CACHE_DIR = Path("~/.cache/nni-covid3d")


class TrialError(Exception):
    """A problem with the trial's input (parameters, architecture, data); the trial fails with it."""


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nni_covid3d.trial",
        description="NNI trial: train a sampled architecture, a baseline, or run one GumbelDNAS search.",
    )
    modes = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    common = argparse.ArgumentParser(add_help=False)
    data = common.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, default="ccccii",
                      help="dataset reader (a 'dataset' tuner parameter overrides it; default ccccii)")
    data.add_argument("--data-root", type=Path, default=None,
                      help="dataset folder; without it, synthetic phantoms are generated into --cache-dir")
    data.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR,
                      help="where synthetic data is written once and reused (default ~/.cache/nni-covid3d)")
    data.add_argument("--synthetic-patients", type=int, default=12, help="patients per synthetic dataset")
    data.add_argument("--size", type=int, nargs=3, default=(16, 64, 64), metavar=("D", "H", "W"),
                      help="input volume size after preprocessing (default 16 64 64)")
    data.add_argument("--split-seed", type=int, default=0, help="seed of the patient-level split")
    train = common.add_argument_group("training")
    train.add_argument("--epochs", type=int, default=3)
    train.add_argument("--batch-size", type=int, default=2)
    train.add_argument("--learning-rate", type=float, default=1e-3)
    add_device_arguments(train)  # --num-nodes: the dnas mode
    add_loader_arguments(train)
    train.add_argument("--seed", type=int, default=0)
    common.add_argument("--params", type=json.loads, default=None,
                        help="tuner parameters as JSON, for running a trial outside NNI")
    common.add_argument("--output-dir", type=Path, default=Path("trial_output"),
                        help="where results go outside NNI (inside NNI: $NNI_OUTPUT_DIR)")

    arch = modes.add_parser("arch", parents=[common], help="train one architecture sampled by an HPO tuner")
    arch.add_argument("--preset", choices=("S", "L"), default="S", help="CovidNet3D space preset (default S)")
    arch.add_argument("--space-config", type=Path, default=None,
                      help="JSON file of CovidNet3DSpace arguments (overrides --preset)")

    modes.add_parser("baseline", parents=[common], help="train one model on one dataset (grid search cell)")

    dnas = modes.add_parser("dnas", parents=[common], help="run one GumbelDNAS search with tuned settings")
    dnas.add_argument("--preset", choices=("S", "L"), default="S")
    dnas.add_argument("--space-config", type=Path, default=None,
                      help="JSON file of CovidNet3DSpace arguments (overrides --preset)")
    dnas.add_argument("--size-budget-mb", type=float, default=None, help="GumbelDNAS model-size budget")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the trial; returns the process exit code.

    Started by NNI, the trial trains in a child process that this one supervises, so that a
    training process killed by a signal (the out-of-memory killer) ends the trial FAILED with the
    reason in its stderr (see :mod:`nni_covid3d.nnictl.supervise`). Otherwise it trains here.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)  # usage errors end here, before any child starts
    if should_supervise():
        return supervise([sys.executable, "-m", "nni_covid3d.nnictl.trial", *argv],
                         env={**os.environ, WORKER_ENV: "1"})
    import nni

    params = dict(nni.get_next_parameter() or {})
    if args.params:
        params.update(args.params)
    output_dir = Path(os.environ.get("NNI_OUTPUT_DIR") or args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        check_loading(args)
        result = MODES[args.mode](args, params, output_dir)
        if result is None:
            return 0  # not rank 0 of a multi-process run: rank 0 writes and reports
    except TrialError as error:
        print(f"nni-covid3d trial ({args.mode}): error: {error}", file=sys.stderr)
        return 1
    (output_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"trial result: {json.dumps(result['final'])}")
    return 0


# --------------------------------------------------------------------------------------------- data
def ensure_synthetic_data(dataset: str, cache_dir: Path, n_patients: int, seed: int = 0, size: int = 64) -> Path:
    """Root of a synthetic ``dataset`` in its real layout under ``cache_dir``, written once.

    Written to a temporary folder and renamed into place, so concurrent trials never see half a dataset.
    """
    from nni_covid3d.data import write_synthetic_dataset

    root = cache_dir.expanduser() / "synthetic" / f"{dataset}-p{n_patients}-s{seed}-{size}px"
    if root.is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        write_synthetic_dataset(dataset, staging, n_patients=n_patients, seed=seed, size=size)
        try:
            staging.rename(root)
        except OSError:  # another trial finished first
            if not root.is_dir():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return root


def check_loading(args: argparse.Namespace) -> None:
    """Refuse bad loader settings (``--loader``, ``--workers``) before any data is read."""
    from nni_covid3d.data.loading import loader_settings

    try:
        loader_settings(args.accelerator, args.workers, args.loader)
    except ValueError as error:
        raise TrialError(str(error)) from None


def load_data(args: argparse.Namespace, dataset: str) -> tuple[SearchData, list[Any]]:
    """Patient-level split of ``dataset``: its training and validation datasets, and the test scans."""
    from nni_covid3d.data import Preprocessing, load_dataset, make_patient_split
    from nni_covid3d.search import SearchData

    if args.data_root is not None:
        root = args.data_root.expanduser()
        if not root.is_dir():
            raise TrialError(f"data root {root} does not exist (omit --data-root to use synthetic phantoms)")
    else:
        # Phantoms are written at least as large as the model input (and no smaller than 64 px).
        root = ensure_synthetic_data(dataset, args.cache_dir, args.synthetic_patients,
                                     size=max(64, args.size[1], args.size[2]))
    try:
        index = load_dataset(dataset, root)
    except (FileNotFoundError, ValueError) as error:
        raise TrialError(f"cannot read dataset {dataset!r} at {root}: {error}") from error
    split = make_patient_split(index.scans, seed=args.split_seed)
    depth, height, width = args.size
    preprocessing = Preprocessing(depth=depth, height=height, width=width, augment_on=args.augment_on)
    data = SearchData.from_split(split, index.class_names, preprocessing, cache_in_memory=True, seed=args.seed)
    return data, list(split["test"])


def dataloaders(args: argparse.Namespace, data: SearchData) -> tuple[Any, Any]:
    """NNI-traced train/val DataLoaders (traced so NNI's evaluators can serialise them)."""
    from nni_covid3d.data.loading import make_loader

    loading = {"accelerator": args.accelerator, "workers": args.workers, "kind": args.loader, "traced": True}
    return (make_loader(data.train, args.batch_size, train=True, seed=args.seed, **loading),
            make_loader(data.val, args.batch_size, train=False, **loading))


# ---------------------------------------------------------------------------------------- reporting
def _trainer(args: argparse.Namespace, callbacks: list, **kwargs: Any):
    """NNI's traced Lightning Trainer with the trial's budget; no logger or checkpoints (trials are short)."""
    from nni.nas.evaluator.pytorch import Trainer

    from nni_covid3d.training.memory_format import ChannelsLast3d, use_channels_last

    layout = [ChannelsLast3d()] if use_channels_last(args.channels_last, args.accelerator) else []
    return Trainer(
        max_epochs=args.epochs, accelerator=args.accelerator, devices=args.devices, callbacks=[*layout, *callbacks],
        precision=check_precision(args.precision, args.accelerator), logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, **kwargs,
    )


def _reporter() -> NniReporter:
    """The NNI reporting callback; the final result is reported by the mode, with its extra fields."""
    from nni_covid3d.nnictl.reporter import NniReporter

    return NniReporter(final_at_fit_end=False)


def _report_final(reporter: NniReporter, **extra: Any) -> dict[str, Any]:
    try:
        return reporter.report_final(**extra)
    except RuntimeError as error:
        raise TrialError(str(error)) from error


# -------------------------------------------------------------------------------------------- modes
def _space_config(args: argparse.Namespace, num_classes: int) -> dict[str, Any]:
    if args.space_config is not None:
        path = args.space_config.expanduser()
        try:
            config = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise TrialError(f"space config {path}: {error}") from error
    else:
        config = {"preset": args.preset}
    config.setdefault("num_classes", num_classes)
    return config


def run_arch(args: argparse.Namespace, params: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """Rebuild the tuner's architecture sample, train it, report validation accuracy and size."""
    import pytorch_lightning as pl
    from nni_covid3d.models import model_size_mb
    from nni_covid3d.training import CovidClassifier
    from nni_covid3d.search_spaces import ArchitectureError, choices_from_hpo, export_architecture, save_architecture

    if not params:
        raise TrialError("no architecture parameters: run under nnictl, or pass --params '{...}'")
    # Validate before touching any data, so a bad sample fails fast with the reason.
    config = _space_config(args, num_classes=3)
    try:
        arch = export_architecture(config, choices_from_hpo(config, params), metadata={"source": "nnictl arch trial"})
    except (ArchitectureError, ValueError) as error:
        raise TrialError(f"invalid architecture from the tuner: {error}") from error

    pl.seed_everything(args.seed, workers=True)
    data, _ = load_data(args, args.dataset)
    if len(data.class_names) != arch["space"]["num_classes"]:
        config["num_classes"] = len(data.class_names)
        arch = export_architecture(config, arch["choices"], metadata=arch.get("metadata"))
    save_architecture(arch, output_dir / "architecture.json")
    reporter = _reporter()
    # By name + architecture (get_model builds it), so NNI's tracing records plain arguments.
    module = CovidClassifier(
        "covidnet3d", class_names=data.class_names, arch=arch, learning_rate=args.learning_rate,
        max_epochs=args.epochs, preprocessing=data.preprocessing.to_dict(), seed=args.seed,
    )
    size_mb = model_size_mb(module.model)
    train, val = dataloaders(args, data)
    _trainer(args, [reporter]).fit(module, train, val)
    final = _report_final(reporter, size_mb=round(size_mb, 4))
    return {"mode": "arch", "params": params, "dataset": args.dataset, "final": final,
            "history": reporter.history, "architecture": "architecture.json"}


def run_baseline(args: argparse.Namespace, params: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    """Train ``params["model"]`` on ``params["dataset"]``; evaluate it once on the test patients."""
    import pytorch_lightning as pl
    from nni_covid3d.models import MIN_DEPTH, MODEL_NAMES
    from nni_covid3d.training import CovidClassifier

    from nni_covid3d.search_spaces.cost import measure_cost

    model_name = str(params.get("model", "")).lower()
    dataset = str(params.get("dataset", args.dataset)).lower()
    if model_name not in MODEL_NAMES or model_name == "covidnet3d":
        raise TrialError(f"parameter 'model' = {params.get('model')!r}: choose a baseline of {list(MODEL_NAMES[1:])}")
    if dataset not in DATASETS:
        raise TrialError(f"parameter 'dataset' = {params.get('dataset')!r}: choose one of {list(DATASETS)}")
    depth = args.size[0]
    if depth < MIN_DEPTH.get(model_name, 1):
        raise TrialError(f"{model_name} needs at least {MIN_DEPTH[model_name]} slices, --size gives {depth}")

    pl.seed_everything(args.seed, workers=True)
    data, test_scans = load_data(args, dataset)
    reporter = _reporter()
    module = CovidClassifier(
        model_name, class_names=data.class_names, learning_rate=args.learning_rate, max_epochs=args.epochs,
        preprocessing=data.preprocessing.to_dict(), seed=args.seed,
    )
    # Cost as `compare` measures it: params, MB, GFLOPs, CPU latency of one volume (1 thread).
    cost = measure_cost(module.model, (1, *args.size))
    train, val = dataloaders(args, data)
    trainer = _trainer(args, [reporter])
    trainer.fit(module, train, val)
    test = evaluate_on_test(args, module, data, test_scans)
    final = _report_final(reporter, size_mb=round(cost["size_mb"], 4), params=int(cost["params"]),
                          gflops=float(cost["gflops"]), latency_ms=float(cost["latency_ms"]), **test_summary(test))
    return {"mode": "baseline", "params": params, "model": model_name, "dataset": dataset, "final": final,
            "history": reporter.history, "test": test, "class_names": data.class_names}


def evaluate_on_test(args: argparse.Namespace, module: Any, data: SearchData, test_scans: list[Any]) -> dict[str, Any]:
    """``nni_covid3d.metrics.classification_metrics`` of the trained module on the test scans (used once)."""
    from nni_covid3d.data import make_dataset
    from nni_covid3d.metrics import classification_metrics
    from nni_covid3d.training.pipeline import predict

    test_set = make_dataset(test_scans, data.preprocessing, train=False, cache_dir=None)
    labels, probs = predict(module, test_set, batch_size=args.batch_size, device=module.device, progress=False)
    return classification_metrics(labels, probs, data.class_names)


def test_summary(metrics: dict[str, Any]) -> dict[str, float]:
    """The scalar test scores reported to NNI (``nni_covid3d.metrics.headline_scores``, ``test_`` prefixed)."""
    from nni_covid3d.metrics import headline_scores

    return {f"test_{key}": float(value) for key, value in headline_scores(metrics).items() if value is not None}


def run_dnas(args: argparse.Namespace, params: dict[str, Any], output_dir: Path) -> dict[str, Any] | None:
    """One GumbelDNAS search with the tuner's temperature schedule and architecture learning rate.

    Under NNI the search keeps checkpoints in ``$NNI_OUTPUT_DIR/search/checkpoints`` and, when an
    earlier run of this trial left one there, resumes from it: ``nnictl resume`` reruns a trial
    that was running at ``nnictl stop`` with the same trial id, parameters and output folder. The
    checkpoints are removed once the trial has succeeded.
    """
    from nni_covid3d.models import model_size_mb
    from nni_covid3d.search import run_search
    from nni_covid3d.search_spaces import build_model, save_architecture
    from nni_covid3d.training.checkpoint import CheckpointError
    from nni_covid3d.training.resume import ResumeError

    known = {"tau_init", "tau_final", "arc_learning_rate", "warmup_epochs", "learning_rate"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise TrialError(f"unknown DNAS parameter(s) {unknown}; known: {sorted(known)}")
    tau_init = float(params.get("tau_init", 5.0))
    options: dict[str, Any] = {"temperature": (tau_init, min(float(params.get("tau_final", 0.5)), tau_init)),
                               "size_budget_mb": args.size_budget_mb}
    options.update({key: cast(params[key]) for key, cast in (("arc_learning_rate", float), ("warmup_epochs", int))
                    if key in params})
    data, _ = load_data(args, args.dataset)
    reporter = _reporter()
    search_dir = output_dir / "search" if launched_by_nni() else None
    last = search_dir / "checkpoints" / "last.ckpt" if search_dir is not None else None
    resume = last is not None and last.is_file()
    if resume:
        print(f"resuming the search from {last} (left by an earlier run of this trial)", file=sys.stderr, flush=True)
    try:
        result = run_search(
            data,
            _space_config(args, num_classes=len(data.class_names)), strategy="gumbel-dnas",
            strategy_options=options, epochs=args.epochs, batch_size=args.batch_size,
            learning_rate=float(params.get("learning_rate", args.learning_rate)), seed=args.seed,
            accelerator=args.accelerator, devices=args.devices, num_nodes=args.num_nodes,
            workers=args.workers, loader=args.loader, channels_last=args.channels_last, callbacks=[reporter], out_dir=search_dir, resume=resume,
            precision=args.precision,
            metadata={"source": "GumbelDNAS nnictl trial", "params": params},
        )
    except (ResumeError, CheckpointError) as error:
        raise TrialError(f"cannot resume the search from {last}: {error} "
                         f"(delete {last.parent} to start this trial's search over)") from error
    except ValueError as error:
        raise TrialError(f"invalid DNAS parameters {params}: {error}") from error
    if not result.is_global_zero:
        return None
    save_architecture(result.architecture, output_dir / "architecture.json")
    final = _report_final(reporter, size_mb=round(model_size_mb(build_model(result.architecture)), 4))
    if search_dir is not None:  # only a rerun of an unfinished trial needs them
        shutil.rmtree(search_dir / "checkpoints", ignore_errors=True)
    return {"mode": "dnas", "params": params, "dataset": args.dataset, "final": final,
            "history": reporter.history, "architecture": "architecture.json", "resumed": resume}


MODES: dict[str, Callable[[argparse.Namespace, dict[str, Any], Path], dict[str, Any]]] = {
    "arch": run_arch,
    "baseline": run_baseline,
    "dnas": run_dnas,
}


if __name__ == "__main__":
    sys.exit(main())
