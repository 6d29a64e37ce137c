"""How the powered benchmark's task was chosen: random architectures only, never a searched one.

    python pilot.py NAME INVOLVEMENT_MIN INVOLVEMENT_MAX ARCHS EPOCHS TRAIN_PATIENTS

writes, under ./NAME, a CC-CCII training root (TRAIN_PATIENTS, synth seed 0; a quarter of
them validate) and a 300-patient test cohort (seed 1), both 48 px with 20-36 slices and the given
involvement, then trains ARCHS uniform draws of the benchmark's space (within ±25% of the median of 300
draws) for EPOCHS epochs with the benchmark's recipe and scores them on the test cohort (pilot.json).
The rule (benchmarks/RESULTS.md, *Powered benchmark*): the easiest setting whose random architectures
spread by at least 10 points with a mean of at most 90%.
"""
import json, sys, time
from pathlib import Path
import numpy as np
import torch
from nni_covid3d.data import Preprocessing, load_dataset, make_patient_split, make_dataset, write_synthetic_dataset
from nni_covid3d.search_spaces import CovidNet3DSpace, build_model, random_architecture
from nni_covid3d.search_spaces.cost import count_parameters
from nni_covid3d.training import load_classifier
from nni_covid3d.training.pipeline import TrainConfig, predict, train_model

name, lo, hi, n_archs, epochs, n_train = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
base = Path(name)  # under the current folder
train_root, test_root = base / "train", base / "test"
for root, n, seed in ((train_root, n_train, 0), (test_root, 300, 1)):
    if not root.exists():
        write_synthetic_dataset("ccccii", root, n_patients=n, seed=seed, size=48, slices=(20, 36), involvement=(lo, hi))
pre = Preprocessing(depth=16, height=48, width=48)
index = load_dataset("ccccii", train_root)
split = make_patient_split(index.scans, val_fraction=0.25, test_fraction=0.0, seed=0)
cache = base / "cache"
train = make_dataset(split["train"], pre, train=True, seed=0, cache_dir=cache)
val = make_dataset(split["val"], pre, train=False, cache_dir=cache)
test_scans = load_dataset("ccccii", test_root).scans
test = make_dataset(test_scans, pre, train=False, cache_dir=cache)
space = CovidNet3DSpace(num_classes=3, preset="S", widths=[16, 24, 32, 48, 64, 96], n_cells=[2, 2, 2, 1, 1, 1], head_channels=256).config
sizes = [count_parameters(build_model(random_architecture(space, seed=10_000 + i))) for i in range(300)]
median = float(np.median(sizes))
archs, draw = [], 0
while len(archs) < n_archs:
    arch = random_architecture(space, seed=draw); draw += 1
    if 0.75 * median <= count_parameters(build_model(arch)) <= 1.25 * median:
        archs.append(arch)
results = []
out = base / "pilot.json"
for i, arch in enumerate(archs):
    t = time.time()
    cfg = TrainConfig(epochs=epochs, batch_size=16, learning_rate=4e-3, seed=0, accelerator="cpu", progress=False)
    r = train_model("covidnet3d", train, val, base / f"arch{i}", class_names=index.class_names, config=cfg, arch=arch,
                    preprocessing=pre.to_dict())
    labels, probs = predict(load_classifier(r.best_checkpoint).model, test, batch_size=16, progress=False)
    acc = float((labels == probs.argmax(1)).mean())
    results.append({"arch": i, "val": r.best_score, "test": acc, "params": count_parameters(build_model(arch)), "minutes": (time.time() - t) / 60})
    print(results[-1], flush=True)
    out.write_text(json.dumps({"setting": [lo, hi], "median_params": median, "n_test_scans": len(test_scans), "runs": results}, indent=1))
