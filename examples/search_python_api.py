"""Search CovidNet3D with NNI's Python experiment API and write the found architecture to a file.

    python examples/search_python_api.py --out best_arch.json                    # GumbelDNAS, synthetic data
    python examples/search_python_api.py --strategy darts --out darts_arch.json  # the drop-in swap
    python examples/search_python_api.py --data-root /data/CC-CCII --dataset ccccii \\
        --accelerator gpu --epochs 50 --size 16 64 64 --batch-size 8 --out best_arch.json
    python examples/search_python_api.py --accelerator gpu --devices 2 --ddp ...  # Lightning DDP
    python examples/search_python_api.py --accelerator gpu --precision bf16-mixed ...  # mixed precision

The core is four NNI lines::

    exp = NasExperiment(CovidNet3DSpace(...), evaluator, GumbelDNAS(...))
    exp.run()
    sample = exp.export_top_models(formatter="dict")[0]
    exp.stop()  # records the experiment as done; left to NNI's exit handler, it logs after streams close
    save_architecture(export_architecture(space_config, sample), "best_arch.json")

``nni_covid3d.search.run_search`` does the same in one call (the wiring of ``nni-covid3d search``,
with checkpoints, the patient hold-out for architecture steps and TensorBoard); this script shows
the NNI objects it is made of.

One-shot search in NNI 3.0 runs in this process (no NNI manager, no web UI). With ``--ddp`` Lightning
starts one process per device by re-running this script; every rank builds the same experiment
and only rank 0 writes the architecture file.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Sequence

import nni_covid3d  # noqa: F401  (filters NNI's known import warnings)
from nni_covid3d.precision import add_precision_argument, check_precision


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--strategy", default="gumbel-dnas",
                        help="gumbel-dnas (default), darts, gumbel-darts, proxyless, random-oneshot")
    parser.add_argument("--out", type=Path, default=Path("best_arch.json"), help="architecture file to write")
    parser.add_argument("--dataset", default="ccccii", choices=("ccccii", "mosmed", "covidctset"))
    parser.add_argument("--data-root", type=Path, default=None,
                        help="dataset folder (default: synthetic phantoms generated into --cache-dir)")
    parser.add_argument("--cache-dir", type=Path, default=Path("~/.cache/nni-covid3d"))
    parser.add_argument("--synthetic-patients", type=int, default=12)
    parser.add_argument("--preset", choices=("S", "L"), default="S")
    parser.add_argument("--space-config", type=Path, default=None,
                        help="JSON file of CovidNet3DSpace arguments (overrides --preset)")
    parser.add_argument("--size", type=int, nargs=3, default=(16, 64, 64), metavar=("D", "H", "W"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--arc-learning-rate", type=float, help="default: the strategy's own")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--devices", default="1")
    add_precision_argument(parser)
    parser.add_argument("--ddp", action="store_true", help="Lightning DDP over --devices (one process each)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="NNI experiment working directory (default ~/nni-experiments)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    import pytorch_lightning as pl
    import torch
    from nni.nas.evaluator.pytorch import DataLoader, Lightning, Trainer
    from nni.nas.experiment import NasExperiment

    from nni_covid3d import strategies
    from nni_covid3d.data import Preprocessing, load_dataset, make_patient_split
    from nni_covid3d.data.loading import drop_remainder
    from nni_covid3d.search import SearchData
    from nni_covid3d.search_spaces import CovidNet3DSpace, export_architecture, save_architecture
    from nni_covid3d.training import CovidClassifier
    from nni_covid3d.nnictl.trial import ensure_synthetic_data

    pl.seed_everything(args.seed, workers=True)

    # Data: patient-level split; the search uses train (weights + architecture) and val only.
    root = args.data_root or ensure_synthetic_data(args.dataset, args.cache_dir, args.synthetic_patients,
                                                   size=max(64, args.size[1], args.size[2]))
    index = load_dataset(args.dataset, root)
    split = make_patient_split(index.scans, seed=args.seed)
    preprocessing = Preprocessing(depth=args.size[0], height=args.size[1], width=args.size[2])
    data = SearchData.from_split(split, index.class_names, preprocessing, cache_in_memory=True, seed=args.seed)
    train_loader = DataLoader(data.train, batch_size=args.batch_size, shuffle=True,
                              generator=torch.Generator().manual_seed(args.seed),
                              drop_last=drop_remainder(len(data.train), args.batch_size))
    val_loader = DataLoader(data.val, batch_size=args.batch_size)

    # Space, evaluator, strategy.
    space_args = json.loads(args.space_config.read_text()) if args.space_config else {"preset": args.preset}
    space = CovidNet3DSpace(**{**space_args, "num_classes": len(index.class_names)})
    space_config = space.config  # the strategy mutates the space in place
    devices = int(args.devices) if str(args.devices).isdigit() else args.devices
    trainer = Trainer(
        max_epochs=args.epochs, accelerator=args.accelerator, devices=devices,
        precision=check_precision(args.precision, args.accelerator),
        # Single-path steps leave the candidates not drawn without gradient: DDP must expect that.
        strategy="ddp_find_unused_parameters_true" if args.ddp else "auto", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, num_sanity_val_steps=0,
    )
    evaluator = Lightning(
        CovidClassifier(class_names=index.class_names, max_epochs=args.epochs,
                        preprocessing=preprocessing.to_dict(), model_name="covidnet3d"),
        trainer, train_dataloaders=train_loader, val_dataloaders=val_loader,
    )
    name = args.strategy.lower().replace("_", "-")
    arc_lr = {} if args.arc_learning_rate is None else {"arc_learning_rate": args.arc_learning_rate}
    if name == "gumbel-dnas":
        strategy = strategies.GumbelDNAS(seed=args.seed, **arc_lr)
    elif name == "random-oneshot":
        strategy = strategies.get(name)
    else:  # NNI's DARTS, GumbelDARTS, Proxyless: the same call, another strategy
        strategy = strategies.get(name, **arc_lr)

    exp = NasExperiment(space, evaluator, strategy)
    if args.work_dir is not None:
        exp.config.experiment_working_directory = str(args.work_dir.expanduser().resolve())
    exp.run()

    sample = exp.export_top_models(formatter="dict")[0]
    exp.stop()  # records the experiment as done; left to NNI's exit handler, it logs after streams close
    arch = export_architecture(space_config, sample, metadata={
        "strategy": args.strategy, "dataset": args.dataset, "experiment": exp.id,
        "epochs": args.epochs, "input_size": list(args.size),
    })
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0:
        save_architecture(arch, args.out)
        print(f"wrote {args.out}: {json.dumps(arch['choices'])}")
    return arch


if __name__ == "__main__":  # required for DDP: Lightning re-runs this script once per rank
    main()
