"""Search cost on the CovidNet3D-S space: GumbelDNAS vs NNI DARTS vs NNI GumbelDARTS vs one subnet.

    .venv/bin/python benchmarks/bench_search.py [--steps 2] [--mem-limit-gb 8] [--configs small large]

Each (method, input) runs in its own subprocess with ``torch.set_num_threads(1)`` (fairness on a
shared machine) under a hard address-space limit (``RLIMIT_AS`` = the address space after imports
plus ``--mem-limit-gb``); running out of memory is recorded as a result. Memory is the peak RSS
(``ru_maxrss``) minus the RSS after imports and data creation, so it counts the model (the supernet
for one-shot methods; only the subnet for ``single``) plus everything training allocates, measured
with glibc's mmap threshold fixed so that freed tensors leave the RSS (see :func:`run_one`). Time is
the median wall time of a training step (a search step is arch step + weight step) through
Lightning, after ``--warmup`` steps, in a second run with glibc's default allocator settings.

Memory is measured in the steady state of a search: every weight has its Adam state from the first
step (a long single-path search has drawn every candidate; a few steps would leave most of the
supernet without optimizer state and understate its memory). ``weights + Adam`` is that fixed part
(parameters and optimizer state); ``rest`` = peak - fixed part (activations, gradients, workspace).

With ``--accelerator gpu`` each run trains on the first CUDA device; memory is then the peak of
``torch.cuda.max_memory_allocated`` (tensors only: model, gradients, optimizer state, activations),
the clock is synchronised around each step, and no address-space limit is set (CUDA reserves a large
virtual address space); running out of GPU memory is still recorded as a result. ``--configs xl``
(batch 8 at 32x128x128) is meant for the GPU.

``gumbel-dnas-largest`` is GumbelDNAS with logits pinned so that every draw is that single subnet:
the worst case of a search step (the normal run draws smaller subnets on average). The ``-ckpt``
variants run GumbelDNAS with ``checkpoint_candidates=True`` (each drawn candidate's inner activations
recomputed in backward); ``-st`` with the straight-through architecture estimator (one path forward and
backward to the logits) instead of the default score-function estimator (two paths, forward only).
The pinned variants draw their weight paths from the logits too (``weight_sampling="gumbel"``).
The single subnet is the largest of the space: every cell ``mbconv_k7_e4`` or every cell
``mbconv_k3_e6``, whichever has more FLOPs at the input, with all cells kept (full depth). All methods
use the same data arrangement as NNI's DARTS (weight batches from the train loader, architecture
batches from a second loader of the same size) and a weight-gradient clip of 5.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {"small": (8, (16, 64, 64)), "large": (2, (32, 128, 128)), "xl": (8, (32, 128, 128))}
METHODS = ("single", "gumbel-dnas", "darts", "gumbel-darts", "gumbel-dnas-largest", "gumbel-dnas-ckpt",
           "gumbel-dnas-ckpt-largest", "gumbel-dnas-st-largest")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _vms_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _largest_subnet(space_config: dict, size: tuple[int, int, int]) -> tuple[str, dict]:
    from nni_covid3d.search_spaces import choice_domains, model_cost, build_model, export_architecture

    best = None
    for op in ("mbconv_k7_e4", "mbconv_k3_e6"):
        sample = {}
        for label, domain in choice_domains(space_config).items():
            # Cells take the op; depth choices keep every cell (value [k]: cells 1..k+1).
            sample[label] = [max(domain.values)] if label.endswith("_depth") else op
        arch = export_architecture(space_config, sample)
        flops = model_cost(build_model(arch), (1, *size)).flops
        if best is None or flops > best[2]:
            best = (op, sample, flops)
    return best[0], best[1]


def _pinned_gumbel_dnas(sample: dict, **kwargs):
    """GumbelDNAS whose logits start (and stay) so peaked that every draw is ``sample``: the worst case,
    a search step on the largest subnet."""
    from nni_covid3d.strategies import GumbelDNAS

    class Pinned(GumbelDNAS):
        def mutate_model(self, model):
            values = {label: list(m.values) for label, m in model.simplify().items()}
            model = super().mutate_model(model)
            with __import__("torch").no_grad():
                for label, alpha in self._arch_parameters.items():
                    alpha.fill_(-50.0)
                    value = sample[label][0] if isinstance(sample[label], list) else sample[label]
                    alpha[values[label].index(value)] = 50.0
            return model

    return Pinned(temperature=0.1, weight_sampling="gumbel", **kwargs)


def worker(method: str, batch: int, size: tuple[int, int, int], steps: int, warmup: int, mem_limit_gb: float,
           accelerator: str = "cpu") -> dict:
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    import pytorch_lightning as pl
    import nni_covid3d  # noqa: F401  (warning filters)
    from nni.nas.evaluator.pytorch import Classification, DataLoader
    from nni.nas.evaluator.pytorch.lightning import ClassificationModule
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import RawFormatModelSpace
    from torch.utils.data import TensorDataset

    from nni_covid3d.search_spaces import CovidNet3DSpace
    from nni_covid3d.strategies import get

    n = batch * (steps + warmup)
    data = TensorDataset(torch.randn(n, 1, *size), torch.randint(0, 3, (n,)))
    arch_data = TensorDataset(torch.randn(n, 1, *size), torch.randint(0, 3, (n,)))

    on_gpu = accelerator == "gpu"

    def sync() -> None:  # GPU work is asynchronous: wait for it before reading the clock
        if on_gpu:
            torch.cuda.synchronize()

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.cpu_times: list[float] = []

        def on_train_batch_start(self, *args) -> None:
            sync()
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, *args) -> None:
            sync()
            self.times.append(time.perf_counter() - self.start)
            self.cpu_times.append(time.process_time() - self.cpu_start)

    class SteadyStateOptimizer(pl.Callback):
        """Give every weight its Adam state before the first step, as a long search has.

        Adam creates a parameter's state at its first gradient, so after a few steps a single-path
        method holds state only for the candidates drawn so far; after a real search it holds state
        for the whole supernet (every candidate is drawn sooner or later). Zero moments at step 0
        are exactly what Adam's own lazy initialisation creates. Also records the fixed part of the
        memory (weights and optimizer state) and the state the run's own draws would have allocated.
        """

        def __init__(self) -> None:
            self.stepped: dict[int, torch.Tensor] = {}

        def on_train_start(self, trainer, *args) -> None:
            for optimizer in trainer.optimizers:
                if not isinstance(optimizer, torch.optim.Adam) or getattr(optimizer, "is_arch_optimizer", False):
                    continue
                for group in optimizer.param_groups:
                    for p in group["params"]:
                        if not optimizer.state[p]:
                            optimizer.state[p] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p),
                                                  "exp_avg_sq": torch.zeros_like(p)}

        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            # Gradients live until the next step's zero_grad: these weights were updated this step.
            self.stepped.update({id(p): p for p in pl_module.parameters() if p.grad is not None})

        def on_train_end(self, trainer, pl_module) -> None:
            # What Adam's lazy state would hold after these steps without the steady-state start.
            result["drawn_state_mb"] = sum(2 * p.numel() * p.element_size() for p in self.stepped.values()) / 2**20
            # The fixed part of the peak: parameters (all candidates for one-shot methods) and
            # optimiser state. The rest is activations, gradients and workspace.
            tensors = list(pl_module.parameters())
            for optimizer in trainer.optimizers:
                tensors += [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)]
            result["weights_state_mb"] = sum(t.numel() * t.element_size() for t in tensors) / 2**20

    timer = StepTimer()
    trainer_kwargs = dict(max_epochs=1, limit_train_batches=steps + warmup, limit_val_batches=0, accelerator=accelerator,
                          devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, num_sanity_val_steps=0,
                          callbacks=[timer, SteadyStateOptimizer()])
    if on_gpu:
        torch.cuda.init()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated() / 2**20
    else:
        baseline = _rss_mb()
        limit = int(_vms_bytes() + mem_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    result = {"method": method, "batch": batch, "size": list(size), "threads": torch.get_num_threads(),
              "accelerator": accelerator}
    if on_gpu:
        result["device"] = torch.cuda.get_device_name(0)
    try:
        space = CovidNet3DSpace("S", num_classes=3)
        if method == "single":
            op, sample = _largest_subnet(space.config, size)
            model = space.freeze(sample)  # a new module: the supernet is not needed (nor counted) after this
            del space
            result["subnet"] = f"all {op}, full depth"
            result["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
            module = ClassificationModule(num_classes=3, learning_rate=1e-3)
            module.set_model(model)
            trainer = pl.Trainer(gradient_clip_val=5.0, **trainer_kwargs)
            trainer.fit(module, DataLoader(data, batch_size=batch, shuffle=True))
        else:
            result["params_m"] = sum(p.numel() for p in space.parameters()) / 1e6
            kwargs = {"gradient_clip_val": 5.0}
            if method.startswith("gumbel-dnas"):
                kwargs["arch_split"] = "val"  # NNI DARTS's arrangement: arch batches from the second loader
                kwargs["checkpoint_candidates"] = "-ckpt" in method
                if "-st" in method:
                    kwargs["arch_estimator"] = "straight_through"
            evaluator = Classification(train_dataloaders=DataLoader(data, batch_size=batch, shuffle=True),
                                       val_dataloaders=DataLoader(arch_data, batch_size=batch),
                                       num_classes=3, learning_rate=1e-3, **trainer_kwargs)
            if method.endswith("-largest"):
                strategy = _pinned_gumbel_dnas(_largest_subnet(space.config, size)[1], **kwargs)
                result["subnet"] = "every draw = the single subnet"
            else:
                strategy = get(method.removesuffix("-ckpt"), **kwargs)
            strategy(RawFormatModelSpace(space, evaluator), SequentialExecutionEngine())
        timed = timer.times[warmup:]
        if len(timed) < steps:
            raise RuntimeError(f"only {len(timer.times)} steps ran")
        result.update(status="ok", step_s=statistics.median(timed), step_times=timer.times,
                      step_cpu_s=statistics.median(timer.cpu_times[warmup:]))
    except (MemoryError, RuntimeError) as error:
        message = str(error)
        oom = isinstance(error, MemoryError) or "allocate" in message or "out of memory" in message
        result.update(status="oom" if oom else "error", error=message[-300:])
    if on_gpu:
        result["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20 - baseline
        result["reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
    else:
        result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - baseline
    result["baseline_mb"] = baseline
    return result


def _run_worker(cmd: list[str], timeout: int, env: dict[str, str]) -> dict:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout>{timeout}s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        # Killed (e.g. by the kernel for memory) or crashed before printing: a result, not a crash.
        return {"status": f"exit {done.returncode}", "error": done.stderr[-500:]}
    return json.loads(lines[-1])


def run_one(method: str, config: str, args: argparse.Namespace) -> dict:
    """One (method, input): on the GPU one run; on the CPU a memory run and a timing run.

    glibc raises its mmap threshold as large blocks are freed and then serves later large tensors
    from heap arenas it keeps: the peak RSS depends on the order of allocations (shapes change
    with every draw) as much as on the memory in use. The memory run fixes the threshold (glibc's
    initial 128 KiB), so every large tensor is mapped on its own and unmapped when freed and the
    peak RSS follows the peak of live tensors; that costs page faults, so steps are timed in a
    second run with glibc's defaults, whose peak RSS is kept as ``peak_mb_glibc_default``.
    """
    batch, size = CONFIGS[config]
    cmd = [sys.executable, __file__, "--worker", method, "--config", config, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--mem-limit-gb", str(args.mem_limit_gb), "--accelerator", args.accelerator]
    start = time.perf_counter()
    if args.accelerator == "gpu":
        result = _run_worker(cmd, args.timeout, dict(os.environ))
    else:
        memory = _run_worker(cmd, args.timeout, {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)})
        timing = _run_worker(cmd, args.timeout, dict(os.environ))
        result = memory if memory["status"] != "ok" else timing
        if memory["status"] == "ok" and timing["status"] == "ok":
            result["peak_mb_glibc_default"] = timing["peak_mb"]
            result.update({k: memory[k] for k in ("peak_mb", "weights_state_mb", "baseline_mb")})
    result = {"method": method, "batch": batch, "size": list(size), **result}
    result["wall_s"] = time.perf_counter() - start
    return result


def table(results: list[dict]) -> str:
    """Markdown table with ratios to the single subnet and to DARTS / GumbelDARTS of the same input.

    CPU results compare process CPU time and wall time; GPU results wall time only (the step is
    synchronised, and the CPU time is the host's).
    """
    on_gpu = any(r.get("accelerator") == "gpu" for r in results)
    if on_gpu:
        rows = ["| input | method | status | peak memory (MB) | weights + Adam (MB) | step (ms) | mem / single | "
                "mem / GumbelDARTS | rest / GumbelDARTS rest | time / single | DARTS time / this |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
    else:
        rows = ["| input | method | status | peak memory (MB) | weights + Adam (MB) | step wall (s) | step CPU (s) | "
                "mem / single | mem / GumbelDARTS | rest / GumbelDARTS rest | CPU time / single | DARTS CPU time / this | "
                "wall / single | DARTS wall / this |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    by = {(r["batch"], tuple(r["size"]), r["method"]): r for r in results}
    for r in sorted(results, key=lambda r: (r["size"][0], r["batch"], METHODS.index(r["method"]))):
        key = (r["batch"], tuple(r["size"]))
        single, gd, darts = (by.get((*key, m)) for m in ("single", "gumbel-darts", "darts"))

        def ratio(a, b, field):
            if a and b and a.get("status") == "ok" and b.get("status") == "ok":
                return f"{a[field] / b[field]:.2f}"
            return "n/a" if not b or b.get("status") == "ok" else f"({b['method']} {b['status']})"

        def rest_ratio(a, b):  # peak memory beyond weights and optimiser state
            if all(x and x.get("status") == "ok" and "weights_state_mb" in x for x in (a, b)):
                return f"{(a['peak_mb'] - a['weights_state_mb']) / (b['peak_mb'] - b['weights_state_mb']):.2f}"
            return "n/a"

        mem = f"{r['peak_mb']:.0f}" if "peak_mb" in r else "n/a"
        fixed = f"{r['weights_state_mb']:.0f}" if "weights_state_mb" in r else "n/a"
        head = f"| {r['batch']}x{'x'.join(map(str, r['size']))} | {r['method']} | {r['status']} | {mem} | {fixed} | "
        if on_gpu:
            step = f"{r['step_s'] * 1000:.1f}" if "step_s" in r else "n/a"
            rows.append(head + f"{step} | {ratio(r, single, 'peak_mb')} | {ratio(r, gd, 'peak_mb')} | {rest_ratio(r, gd)} | "
                        f"{ratio(r, single, 'step_s')} | {ratio(darts, r, 'step_s')} |")
            continue
        step = f"{r['step_s']:.2f}" if "step_s" in r else "n/a"
        cpu = f"{r['step_cpu_s']:.2f}" if "step_cpu_s" in r else "n/a"
        rows.append(head + f"{step} | {cpu} | {ratio(r, single, 'peak_mb')} | {ratio(r, gd, 'peak_mb')} | {rest_ratio(r, gd)} | "
                    f"{ratio(r, single, 'step_cpu_s')} | {ratio(darts, r, 'step_cpu_s')} | "
                    f"{ratio(r, single, 'step_s')} | {ratio(darts, r, 'step_s')} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["small", "large"], choices=list(CONFIGS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--merge", action="store_true", help="add to the results already in --out")
    parser.add_argument("--table-only", action="store_true", help="print the table of the results in --out")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    parser.add_argument("--mem-limit-gb", type=float, default=8.0)
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per run")
    parser.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--out", type=Path, help="results JSON (default: bench_search.json, or "
                        "bench_search_gpu.json with --accelerator gpu, beside this script)")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--config", choices=list(CONFIGS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.out is None:
        args.out = Path(__file__).with_name("bench_search_gpu.json" if args.accelerator == "gpu" else "bench_search.json")
    if args.worker:
        batch, size = CONFIGS[args.config]
        print(json.dumps(worker(args.worker, batch, size, args.steps, args.warmup, args.mem_limit_gb,
                                args.accelerator)), flush=True)
        return 0
    if args.table_only:
        print(table(json.loads(args.out.read_text())))
        return 0
    results = json.loads(args.out.read_text()) if args.merge and args.out.is_file() else []
    for config in args.configs:
        for method in args.methods:
            result = run_one(method, config, args)
            print(json.dumps({k: v for k, v in result.items() if k != "step_times"}), flush=True)
            results.append(result)
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
