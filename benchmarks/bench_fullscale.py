"""Full-scale timing of a GumbelDNAS search epoch and a retrain epoch with real data loading, per precision.

On the GPU machine (about 2,500 CC-CCII-layout scans at 128 px, batch 8 of 1x32x128x128)::

    python benchmarks/bench_fullscale.py --out $OUT/bench_fullscale.json

At toy scale on a CPU (under a minute)::

    OMP_NUM_THREADS=1 python benchmarks/bench_fullscale.py --accelerator cpu --patients 24 --synth-size 32 \\
        --slices 8 12 --size 8 32 32 --batch-size 4 --out /tmp/fs.json

What it does, in order, writing the JSON after each stage (a run cut short keeps what it measured):

1. Data: writes synthetic CC-CCII phantoms (``write_synthetic_dataset``; ``--root`` reads an existing
   dataset instead), in parallel shards when there are many patients: each process writes whole
   patients into a shard of its own and the shards are merged into one CC-CCII root (patients
   renumbered, masks and the two CSV files rewritten). Then the patient split and
   ``SearchData.from_split`` with the disk cache, whose warm-up (decode, window, resize every scan of
   the train and val splits) is timed on its own, split over the same processes.
2. Per precision (``--precisions``): one GumbelDNAS search epoch through ``run_search`` on the compact
   space (no warm-up epoch: every step is an architecture step plus a weight step), then one retrain
   epoch through ``train_model`` of the architecture the first precision's search exported (the same
   network in every precision). A callback times every training batch: the step (batch start to
   batch end, the GPU synchronised) and the data wait (previous batch end to this batch start, which
   includes the copy to the device). Medians leave out the first ``--warmup-steps`` batches.
   ``--max-steps`` cuts both epochs (and their validation) short; the full epoch is then
   extrapolated from the steady-state batch times.
3. Ratios (bf16 / fp32 step, search step / retrain step) and the targets, each with pass/fail:
   100 search epochs <= 1 GPU-hour, data wait <= 5% of a step, bf16 step <= 0.6x fp32 step, search
   step <= 2.2x subnet step. The targets are set for the full-scale GPU run; on a CPU they are only
   reported.

The search and the retrain load alike (``nni_covid3d.data.loading.make_loader``: ``--workers``,
``--loader``, pinned memory and prefetch on a GPU) and share ``--channels-last`` and ``--augment-on``
(with ``device``, the augmentation is part of the timed step, not of the data wait).
"""
from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import pytorch_lightning as pl
import torch

#: The compact space of the CPU benchmarks (benchmarks/fair_cpu/run.sh, bench_precision.py).
SPACE = {"preset": "S", "widths": [16, 24, 32, 48, 64, 96], "n_cells": [2, 2, 2, 1, 1, 1], "head_channels": 256}
#: Patients for about 2,500 scans: the generator draws 1, 1, 2 or 3 scans per patient (1.75 on average).
DEFAULT_PATIENTS = 1430
#: The full-scale scan count the synthetic writing time is extrapolated to (CC-CCII's size).
FULL_SCANS = 2500
#: Synthetic patients per writing process below which a shard is not worth a process.
PATIENTS_PER_PROCESS = 32
SEARCH_EPOCHS = 100  # the search budget the epoch time is extrapolated to
TARGETS = {
    "search_100_epochs_gpu_hours": (1.0, "100 search epochs take at most 1 GPU-hour (the faster precision)"),
    "data_wait_share": (0.05, "data wait is at most 5% of a training step (every precision and phase)"),
    "bf16_over_fp32_step": (0.6, "a bf16-mixed step takes at most 0.6x an fp32 step (search and retrain)"),
    "search_over_subnet_step": (2.2, "a search step takes at most 2.2x a retrain (subnet) step (every precision)"),
}


# ------------------------------------------------------------------------------------------ timing
class StepTimer(pl.Callback):
    """Times each training and validation batch of one fit; optionally stops the epoch after ``max_steps``.

    Step: ``on_*_batch_start`` to ``on_*_batch_end`` (``torch.cuda.synchronize`` at both ends on a
    GPU). Data wait: the previous batch's end (or the epoch's start) to this batch's start.
    """

    def __init__(self, max_steps: int | None = None) -> None:
        self.max_steps = max_steps
        self.step_s: list[float] = []
        self.wait_s: list[float] = []
        self.val_step_s: list[float] = []
        self.val_wait_s: list[float] = []
        self.epoch_s: float | None = None
        self.train_batches_full: int | None = None
        self.val_batches_full: int | None = None
        self._mark = 0.0
        self._start = 0.0
        self._epoch_start = 0.0

    @staticmethod
    def _now(pl_module: pl.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.max_steps is not None:  # read by the fit loop when it sets up its loaders, after this hook
            trainer.limit_train_batches = self.max_steps
            trainer.limit_val_batches = self.max_steps

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.train_batches_full = _batches(trainer.train_dataloader)
        self.val_batches_full = _batches(trainer.val_dataloaders)
        self._epoch_start = self._mark = self._now(pl_module)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._start = self._now(pl_module)
        self.wait_s.append(self._start - self._mark)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._mark = self._now(pl_module)
        self.step_s.append(self._mark - self._start)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mark = self._now(pl_module)

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                                  batch_idx: int, dataloader_idx: int = 0) -> None:
        self._start = self._now(pl_module)
        self.val_wait_s.append(self._start - self._mark)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        self._mark = self._now(pl_module)
        self.val_step_s.append(self._mark - self._start)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the epoch's validation, before the checkpoints are written (Lightning runs them last).
        self.epoch_s = self._now(pl_module) - self._epoch_start


def _batches(loaders: Any) -> int | None:
    """Batches per epoch of a loader, a list or a dict of loaders (Lightning cycles the shorter ones)."""
    if loaders is None:
        return None
    if isinstance(loaders, dict):
        loaders = list(loaders.values())
    if not isinstance(loaders, (list, tuple)):
        loaders = [loaders]
    lengths = [len(loader) for loader in loaders]
    return max(lengths) if lengths else None


def _steady(values: Sequence[float], skip: int) -> list[float]:
    """``values`` without the first ``skip`` (warm-up), keeping at least the last one."""
    return list(values[min(skip, max(0, len(values) - 1)):])


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(timer: StepTimer, warmup_steps: int, fit_s: float) -> dict[str, Any]:
    """Medians, data-wait share, steps/s and the (extrapolated) full epoch time of one timed fit."""
    if timer.epoch_s is None or not timer.step_s:
        raise RuntimeError("the timed fit ran no complete training epoch (no batch or no epoch end reached the timer)")
    steps, waits = _steady(timer.step_s, warmup_steps), _steady(timer.wait_s, warmup_steps)
    val_steps, val_waits = _steady(timer.val_step_s, warmup_steps), _steady(timer.val_wait_s, warmup_steps)
    cycle = statistics.mean(s + w for s, w in zip(steps, waits))
    val_cycle = statistics.mean(s + w for s, w in zip(val_steps, val_waits)) if val_steps else 0.0
    train_full = max(timer.train_batches_full or 0, len(timer.step_s))
    val_full = max(timer.val_batches_full or 0, len(timer.val_step_s))
    # The measured epoch plus the batches it did not run, at the steady-state pace.
    epoch_full = (timer.epoch_s + (train_full - len(timer.step_s)) * cycle
                  + (val_full - len(timer.val_step_s)) * val_cycle)
    median_step, median_wait = _median(steps), _median(waits)
    return {
        "steps_run": len(timer.step_s),
        "steps_per_epoch": train_full,
        "steady_steps": len(steps),
        "val_batches_run": len(timer.val_step_s),
        "val_batches_per_epoch": val_full,
        "cut_short": len(timer.step_s) < train_full or len(timer.val_step_s) < val_full,
        "median_step_s": median_step,
        "median_data_wait_s": median_wait,
        # Share of the steady-state wall time spent waiting for data (what stalls cost the epoch) ...
        "data_wait_share": sum(waits) / (sum(waits) + sum(steps)),
        # ... and the median batch's share.
        "data_wait_share_median": median_wait / (median_wait + median_step),
        "steps_per_s": 1.0 / cycle,
        "median_val_step_s": _median(val_steps),
        "median_val_data_wait_s": _median(val_waits),
        "epoch_s_measured": timer.epoch_s,
        "epoch_s": epoch_full,
        "fit_s": fit_s,
        "step_s": timer.step_s,
        "data_wait_s": timer.wait_s,
    }


# -------------------------------------------------------------------------------------------- data
def default_prep_processes(n_patients: int) -> int:
    """Processes that write (and cache) the synthetic data: one per CPU, at most one per 32 patients."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cpus, n_patients // PATIENTS_PER_PROCESS))


def _write_shard(root: str, n_patients: int, seed: int, size: int, slices: tuple[int, int] | None) -> float:
    """One process's share of the synthetic patients (a complete CC-CCII root of its own); its CPU seconds."""
    from nni_covid3d.data import write_synthetic_dataset

    start = time.process_time()
    write_synthetic_dataset("ccccii", root, n_patients=n_patients, seed=seed, size=size, slices=slices)
    return time.process_time() - start


def _merge_shards(shards: Sequence[Path], root: Path) -> None:
    """Move the shards' patients into one CC-CCII root, renumbering patients so that ids stay unique.

    Scan ids are kept (they need only be unique within a patient); lesion masks follow their scans,
    and ``unzip_filenames.csv`` and ``lesions_slices.csv`` are rewritten with the new patient ids.
    """
    from nni_covid3d.data.ccccii import CLASS_NAMES, FILE_LIST_CSV, LESION_SLICES_CSV, mask_path_for

    unzip_rows: list[list[str]] = []
    lesion_rows: list[str] = []
    header: list[str] | None = None
    next_id = 1000
    for shard in shards:
        new_ids: dict[tuple[str, str], str] = {}
        for class_name in CLASS_NAMES:
            class_dir = shard / class_name
            if not class_dir.is_dir():
                continue
            for patient_dir in sorted(class_dir.iterdir(), key=lambda p: (len(p.name), p.name)):
                new_id = str(next_id)
                next_id += 1
                new_ids[class_name, patient_dir.name] = new_id
                target = root / class_name / new_id
                target.parent.mkdir(parents=True, exist_ok=True)
                patient_dir.rename(target)
                for scan_dir in target.iterdir():
                    mask = mask_path_for(shard, class_name, patient_dir.name, scan_dir.name)
                    if mask.is_file():
                        moved = mask_path_for(root, class_name, new_id, scan_dir.name)
                        moved.parent.mkdir(parents=True, exist_ok=True)
                        mask.rename(moved)
        with (shard / FILE_LIST_CSV).open(newline="") as handle:
            rows = list(csv.reader(handle))
        header = rows[0]
        for zip_file, label, patient_id, scan_id, n_slice in rows[1:]:
            new_id = new_ids[label, patient_id]
            unzip_rows.append([zip_file.replace(f"-{patient_id}.", f"-{new_id}."), label, new_id, scan_id, n_slice])
        for line in (shard / LESION_SLICES_CSV).read_text().splitlines()[1:]:
            class_name, patient_id, rest = line.split("/", 2)
            lesion_rows.append(f"{class_name}/{new_ids[class_name, patient_id]}/{rest}")
    with (root / FILE_LIST_CSV).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header or ["zip_file", "label", "patient_id", "scan_id", "n_slice"])
        writer.writerows(unzip_rows)
    (root / LESION_SLICES_CSV).write_text("imgpath\n" + "".join(f"{row}\n" for row in lesion_rows))


def write_ccccii(root: Path, n_patients: int, *, size: int, slices: tuple[int, int] | None, seed: int,
                 processes: int) -> dict[str, Any]:
    """Write ``n_patients`` synthetic CC-CCII patients to ``root`` with ``processes`` processes; what was done.

    One process calls ``write_synthetic_dataset`` once (seed ``seed``). More split the patients into
    near-equal shards (shard ``k`` seeded ``seed * 10000 + k``), written side by side and merged.
    """
    if processes < 1:
        raise ValueError(f"--prep-processes must be at least 1, got {processes}")
    processes = min(processes, n_patients)
    start = time.perf_counter()
    if processes == 1:
        cpu_s = _write_shard(str(root), n_patients, seed, size, slices)
        method = "write_synthetic_dataset in one process"
    else:
        shard_dir = root.parent / f".{root.name}-shards"
        if shard_dir.exists():
            shutil.rmtree(shard_dir)
        sizes = [n_patients // processes + (k < n_patients % processes) for k in range(processes)]
        shards = [shard_dir / f"shard{k:02d}" for k in range(processes)]
        # spawn, not fork: the parent has imported torch, whose thread pools a fork would copy half-made.
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            cpu_s = sum(pool.map(_write_shard, map(str, shards), sizes, [seed * 10000 + k for k in range(processes)],
                                 [size] * processes, [slices] * processes))
        root.mkdir(parents=True, exist_ok=True)
        _merge_shards(shards, root)
        shutil.rmtree(shard_dir)
        method = (f"{processes} processes, each write_synthetic_dataset on a shard of whole patients (seed "
                  f"{seed}*10000+shard), merged into one root with patients renumbered")
    return {"seconds": time.perf_counter() - start, "cpu_seconds": cpu_s, "processes": processes, "method": method}


def _warm_part(scans: list, preprocessing: Any, cache_dir: str) -> int:
    """Fill the disk cache for ``scans`` (one process's share); how many entries it computed."""
    torch.set_num_threads(1)
    from nni_covid3d.data import make_dataset

    return make_dataset(scans, preprocessing, train=False, cache_dir=cache_dir).base.warm(progress=False)


def warm_cache(data: Any, scans: Sequence[Any], preprocessing: Any, cache_dir: Path, processes: int) -> dict[str, Any]:
    """Fill the disk cache of ``data`` (``SearchData``): shares of ``scans`` in ``processes`` processes
    first (when more than one), then the library's own ``ScanDataset.base.warm`` (which computes
    what is still missing: everything, with one process)."""
    start = time.perf_counter()
    parallel = 0
    if processes > 1 and len(scans) > 1:
        processes = min(processes, len(scans))
        parts = [list(scans[k::processes]) for k in range(processes)]
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            parallel = sum(pool.map(_warm_part, parts, [preprocessing] * processes, [str(cache_dir)] * processes))
    else:
        processes = 1
    library = data.train.base.warm(progress=True) + data.val.base.warm(progress=True)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "scans": len(scans), "processes": processes, "computed_in_parallel": parallel,
            "computed_by_library_warm": library, "seconds_per_scan": seconds / max(1, len(scans)),
            "process_seconds_per_scan": seconds * processes / max(1, len(scans))}


# ------------------------------------------------------------------------------------------ runs
def _peak_gpu_mb(accelerator: str) -> float | None:
    from nni_covid3d.data.loading import uses_gpu

    return torch.cuda.max_memory_allocated() / 2**20 if uses_gpu(accelerator) else None


def _reset_peak(accelerator: str) -> None:
    from nni_covid3d.data.loading import uses_gpu

    if uses_gpu(accelerator):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def time_search(data: Any, args: argparse.Namespace, precision: str, workers: int) -> tuple[dict[str, Any], dict]:
    """One GumbelDNAS search epoch through ``run_search``; its timings and the exported architecture."""
    from nni_covid3d.search import run_search

    timer = StepTimer(args.max_steps)
    _reset_peak(args.accelerator)
    start = time.perf_counter()
    result = run_search(data, SPACE, strategy="gumbel-dnas", strategy_options={"warmup_epochs": 0}, epochs=1,
                        batch_size=args.batch_size, accelerator=args.accelerator, precision=precision,
                        workers=workers, loader=args.loader, channels_last=args.channels_last, callbacks=[timer],
                        seed=args.seed)
    summary = summarize(timer, args.warmup_steps, time.perf_counter() - start)
    summary["gpu_hours_100_epochs"] = summary["epoch_s"] * SEARCH_EPOCHS / 3600
    summary["peak_gpu_mb"] = _peak_gpu_mb(args.accelerator)
    return summary, result.architecture


def time_retrain(data: Any, args: argparse.Namespace, precision: str, workers: int, arch: dict,
                 out_dir: Path) -> dict[str, Any]:
    """One retrain epoch of ``arch`` through ``train_model``; its timings."""
    from nni_covid3d.training.memory_format import use_channels_last
    from nni_covid3d.training.pipeline import TrainConfig, train_model

    config = TrainConfig(epochs=1, batch_size=args.batch_size, seed=args.seed, num_workers=workers,
                         loader=args.loader, channels_last=args.channels_last, accelerator=args.accelerator,
                         precision=precision, progress=False)
    timer = StepTimer(args.max_steps)
    _reset_peak(args.accelerator)
    start = time.perf_counter()
    train_model("covidnet3d", data.train, data.val, out_dir, class_names=data.class_names, config=config, arch=arch,
                preprocessing=data.preprocessing.to_dict(), callbacks=[timer])
    summary = summarize(timer, args.warmup_steps, time.perf_counter() - start)
    summary["channels_last"] = use_channels_last(args.channels_last, args.accelerator)
    summary["peak_gpu_mb"] = _peak_gpu_mb(args.accelerator)
    return summary


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def ratios_and_targets(runs: dict[str, dict[str, dict[str, Any]]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The step ratios and the targets with pass/fail (``None`` where not measured)."""
    def step(precision: str, phase: str) -> float | None:
        return runs.get(precision, {}).get(phase, {}).get("median_step_s")

    ratios = {
        "bf16_over_fp32_step": {phase: _ratio(step("bf16-mixed", phase), step("32-true", phase))
                                for phase in ("search", "retrain")},
        "fp16_over_fp32_step": {phase: _ratio(step("16-mixed", phase), step("32-true", phase))
                                for phase in ("search", "retrain")},
        "search_over_subnet_step": {precision: _ratio(step(precision, "search"), step(precision, "retrain"))
                                    for precision in runs},
    }
    hours = {p: r["search"].get("gpu_hours_100_epochs") for p, r in runs.items() if "search" in r}
    waits = {f"{p}/{phase}": r[phase].get("data_wait_share") for p, r in runs.items()
             for phase in ("search", "retrain") if phase in r}

    def target(name: str, values: dict[str, float | None], best: bool) -> dict[str, Any]:
        limit, goal = TARGETS[name]
        measured = [v for v in values.values() if v is not None]
        value = (min(measured) if best else max(measured)) if measured else None
        return {"name": name, "goal": goal, "limit": limit, "value": value, "values": values,
                "pass": None if value is None else value <= limit}

    targets = [
        target("search_100_epochs_gpu_hours", hours, best=True),
        target("data_wait_share", waits, best=False),
        target("bf16_over_fp32_step", ratios["bf16_over_fp32_step"], best=False),
        target("search_over_subnet_step", ratios["search_over_subnet_step"], best=False),
    ]
    return ratios, targets


def environment(accelerator: str) -> dict[str, Any]:
    """Device, library versions and machine load."""
    from nni_covid3d.data.loading import uses_gpu

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    gpu = uses_gpu(accelerator)
    return {
        "device": "cuda" if gpu else "cpu",
        "device_name": torch.cuda.get_device_name(0) if gpu else (platform.processor() or platform.machine()),
        "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if gpu else None,
        "python": platform.python_version(),
        **{name: version(name) for name in ("torch", "pytorch-lightning", "lightning", "nni", "monai")},
        "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_start": list(os.getloadavg()),
    }


def _failed(error: Exception) -> dict[str, str]:
    """The record of a phase that raised ``error`` (also logged with its traceback)."""
    import traceback

    traceback.print_exception(error)
    return {"error": f"{type(error).__name__}: {error}"}


def _save_with_targets(result: dict[str, Any], out: Path) -> None:
    result["ratios"], result["targets"] = ratios_and_targets(result["runs"])
    _save(result, out)


def _save(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps(result, indent=2) + "\n")
    partial.replace(out)


def _log(message: str) -> None:
    print(f"[bench_fullscale] {message}", flush=True)


# -------------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    from nni_covid3d.devices import AUGMENT_ON, CHANNELS_LAST_CHOICES, LOADER_KINDS
    from nni_covid3d.precision import PRECISIONS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accelerator", default="auto", choices=("auto", "gpu", "cpu"))
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"], choices=PRECISIONS)
    parser.add_argument("--patients", type=int, default=DEFAULT_PATIENTS,
                        help=f"synthetic patients to write (default {DEFAULT_PATIENTS}: about {FULL_SCANS} scans)")
    parser.add_argument("--synth-size", type=int, default=128, help="in-plane size of the synthetic slices")
    parser.add_argument("--slices", type=int, nargs=2, metavar=("MIN", "MAX"),
                        help="slices per synthetic scan (default: the CC-CCII layout's, 24 to 64)")
    parser.add_argument("--root", type=Path, help="an existing dataset to read instead of writing phantoms")
    parser.add_argument("--dataset", default="ccccii", choices=("ccccii", "mosmed", "covidctset"),
                        help="the layout of --root")
    parser.add_argument("--size", type=int, nargs=3, default=(32, 128, 128), metavar=("D", "H", "W"),
                        help="preprocessed input size")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, help="loader worker processes (default: the device's default)")
    parser.add_argument("--loader", default="torch", choices=LOADER_KINDS, help="loader kind (search and retrain)")
    parser.add_argument("--channels-last", default="auto", choices=CHANNELS_LAST_CHOICES, help="memory format (search and retrain)")
    parser.add_argument("--augment-on", default="loader", choices=AUGMENT_ON,
                        help="train-time augmentation in the loader or on the device (search and retrain)")
    parser.add_argument("--max-steps", type=int, help="cut each epoch (and its validation) after this many batches")
    parser.add_argument("--warmup-steps", type=int, default=3, help="first batches left out of the medians")
    parser.add_argument("--prep-processes", type=int,
                        help="processes writing and caching the data (default: one per CPU, at most one per "
                             f"{PATIENTS_PER_PROCESS} patients)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, help="data, cache and retrain outputs (default: a temporary folder, "
                                                      "removed at the end)")
    parser.add_argument("--out", type=Path, default=Path("bench_fullscale.json"))
    args = parser.parse_args(argv)
    if args.patients < 3:
        parser.error(f"--patients must be at least 3 (one per class), got {args.patients}")
    if args.batch_size < 2:
        parser.error(f"--batch-size must be at least 2 (BatchNorm), got {args.batch_size}")
    if args.max_steps is not None and args.max_steps <= args.warmup_steps:
        parser.error(f"--max-steps ({args.max_steps}) must exceed --warmup-steps ({args.warmup_steps}), "
                     "or no step would be timed in the steady state")
    if args.workers is not None and args.workers < 0:
        parser.error(f"--workers must be 0 or more, got {args.workers}")
    if args.root is not None and not args.root.is_dir():
        parser.error(f"--root {args.root}: no such folder")
    return args


def prepare_data(args: argparse.Namespace, work: Path, result: dict[str, Any]) -> Any:
    """Write (or read) the dataset, split it, build ``SearchData`` and warm its cache; fills ``result["data"]``."""
    from nni_covid3d.data import Preprocessing, load_dataset, make_patient_split
    from nni_covid3d.search import SearchData

    info: dict[str, Any] = result.setdefault("data", {})
    processes = args.prep_processes or default_prep_processes(args.patients)
    if args.root is not None:
        root, dataset = args.root, args.dataset
        info.update(root=str(root), written=False)
    else:
        root, dataset = work / "ccccii", "ccccii"
        # New data at the same paths: a cache left from another run could hold other volumes.
        for stale in (root, work / "cache"):
            if stale.exists():
                shutil.rmtree(stale)
        _log(f"writing {args.patients} synthetic patients at {args.synth_size} px with {processes} process(es)")
        synth = write_ccccii(root, args.patients, size=args.synth_size, slices=tuple(args.slices) if args.slices else None,
                             seed=args.seed, processes=processes)
        info.update(root=str(root), written=True, patients=args.patients, synth_size=args.synth_size,
                    slices=args.slices, synth=synth)
    start = time.perf_counter()
    index = load_dataset(dataset, root)
    info.update(dataset=dataset, scans=len(index.scans), index_s=time.perf_counter() - start)
    if info["written"]:
        synth, n_scans = info["synth"], len(index.scans)
        # CPU seconds per scan (writing only): what a machine of like cores needs, whatever its load.
        per_scan = synth["cpu_seconds"] / n_scans
        extrapolated = {f"{FULL_SCANS}_scans_1_process": per_scan * FULL_SCANS}
        if synth["processes"] > 1:
            extrapolated[f"{FULL_SCANS}_scans_{synth['processes']}_processes"] = per_scan * FULL_SCANS / synth["processes"]
        synth.update(seconds_per_scan=synth["seconds"] / n_scans, cpu_seconds_per_scan=per_scan,
                     extrapolated_s=extrapolated)
    split = make_patient_split(index.scans, seed=args.seed)
    class_names = list(index.class_names)
    preprocessing = Preprocessing(depth=args.size[0], height=args.size[1], width=args.size[2],
                                  augment_on=args.augment_on)
    cache_dir = work / "cache"
    data = SearchData.from_split(split, class_names, preprocessing, cache_dir=cache_dir)
    info["split"] = {name: {"scans": len(scans), "patients": len({s.patient_id for s in scans})}
                     for name, scans in split.items()}
    info["class_names"] = class_names
    _log(f"{len(index.scans)} scans; warming the cache of {len(split['train']) + len(split['val'])} train/val scans")
    info["warm"] = warm_cache(data, [*split["train"], *split["val"]], preprocessing, cache_dir, processes)
    if args.loader == "device":
        info["device_cache"] = cache_on_device(data, args.accelerator)
    return data


def cache_on_device(data: Any, accelerator: str) -> dict[str, Any]:
    """Fill the train and val volumes' cache in the training device's memory (``--loader device``; the
    loaders made later find it filled), timed."""
    from nni_covid3d.data.loading import scans_of, training_device

    device = training_device(accelerator)
    _log(f"holding the train/val volumes in {device} memory")
    start = time.perf_counter()
    before = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
    for part in (data.train, data.val):
        scans_of(part).cache_on(device)
    info = {"device": str(device), "seconds": time.perf_counter() - start, "scans": len(data.train) + len(data.val)}
    if device.type == "cuda":
        info["gpu_mb"] = (torch.cuda.memory_allocated(device) - before) / 2**20
    return info


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark (module docstring); returns the result also written to ``--out``."""
    args = parse_args(argv)
    from nni_covid3d.data.loading import default_workers, loader_settings
    from nni_covid3d.precision import check_precision

    for precision in args.precisions:
        check_precision(precision, args.accelerator)
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        raise SystemExit("--accelerator gpu, but torch sees no CUDA GPU")
    begin = time.perf_counter()
    workers, pin_memory = loader_settings(args.accelerator, args.workers, args.loader)
    result: dict[str, Any] = {
        "benchmark": "bench_fullscale",
        "args": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
        "environment": environment(args.accelerator),
        "space": SPACE,
        "loader": {
            "workers": workers, "default_workers": default_workers(args.accelerator),
            "kind": args.loader, "pin_memory": pin_memory,
            "other": "nni_covid3d.data.loading.make_loader's defaults for the device, search and retrain alike",
        },
        "notes": [
            "A search step is one GumbelDNAS architecture step plus one weight step (warm-up epochs off).",
            "The retrain trains the architecture exported by the first precision's search, in every precision.",
            "Step and data-wait medians leave out the first --warmup-steps batches; data wait includes the copy "
            "to the device; epoch_s extrapolates a cut epoch at the steady-state pace (equal to "
            "epoch_s_measured when not cut). Epoch times exclude checkpoint writing.",
            f"gpu_hours_100_epochs = epoch_s x {SEARCH_EPOCHS} / 3600: every epoch a searching one (a real "
            "search's warm-up epochs skip the architecture step and cost less).",
            "data.synth.extrapolated_s: this run's CPU seconds per written scan (at its --synth-size and "
            f"--slices) times {FULL_SCANS} scans, in one process and spread over the processes used.",
            "The targets are set for the full-scale run on the GPU.",
        ],
        "runs": {},
    }
    made_work = args.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="bench_fullscale-")) if made_work else args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    try:
        data = prepare_data(args, work, result)
        _save(result, args.out)
        arch = None
        for precision in args.precisions:
            # A failing phase (out of memory, say) is recorded and the others still run.
            run = result["runs"].setdefault(precision, {})
            _log(f"search epoch, {precision}")
            try:
                run["search"], exported = time_search(data, args, precision, workers)
                arch = arch or exported
                result["retrain_architecture"] = arch
            except Exception as error:  # recorded in the JSON; the run goes on
                run["search"] = _failed(error)
            _save_with_targets(result, args.out)
            if arch is None:
                run["retrain"] = {"error": "no architecture to retrain: no search epoch has finished"}
                continue
            _log(f"retrain epoch, {precision}")
            out_dir = work / "retrain" / precision
            if out_dir.exists():
                shutil.rmtree(out_dir)
            try:
                run["retrain"] = time_retrain(data, args, precision, workers, arch, out_dir)
            except Exception as error:  # recorded in the JSON
                run["retrain"] = _failed(error)
            _save_with_targets(result, args.out)
    finally:
        if made_work:
            shutil.rmtree(work, ignore_errors=True)
    result["environment"]["load_average_end"] = list(os.getloadavg())
    result["wall_s"] = time.perf_counter() - begin
    _save(result, args.out)
    _log(json.dumps(headline(result)))
    return result


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The key figures of a result, for the log."""
    keys = ("median_step_s", "data_wait_share", "epoch_s", "error")
    runs = {precision: {phase: {key: r[key] for key in keys if key in r} for phase, r in phases.items()}
            for precision, phases in result["runs"].items()}
    return {"scans": result["data"]["scans"], "runs": runs, "ratios": result.get("ratios"),
            "targets": {t["name"]: t["pass"] for t in result.get("targets", [])}}


if __name__ == "__main__":
    outcome = main()
    failed = [f"{precision}/{phase}" for precision, phases in outcome["runs"].items()
              for phase, record in phases.items() if "error" in record]
    raise SystemExit(f"failed: {', '.join(failed)} (see the JSON)" if failed else 0)
