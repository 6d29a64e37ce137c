#!/bin/bash
# The GPU benchmarks in one go, for a lent NVIDIA H200 (16 CPU cores): at most about 9 minutes in all.
#
# How it is launched. The GPU machine reaches no package registry, and a .venv (`make test` /
# `make demo` build one here from the registry) is far over the 64 MiB that travels with the working
# tree. Its image's python3 already holds torch, pytorch-lightning, numpy, scipy, pandas, pillow,
# scikit-learn, tensorboard, torchmetrics; the rest travels as wheels:
#
#   1. here, once, from the repository root, with the project's venv (`make .venv/.project-installed`):
#          bash benchmarks/gpu/run_all.sh --prepare
#      downloads Python 3.12 wheels of nni 3.0 (without its 190 MB web UI, nni_node, which no
#      benchmark uses), monai, nibabel and the other missing packages into .gpu-wheels/ (about
#      9 MB, listed in .git/info/exclude so that git ignores it);
#   2. through the device tool, from the repository root:
#          run(command="bash benchmarks/gpu/run_all.sh", carry=[".gpu-wheels"], timeout_s=590)
#      which installs the wheels and this project (--no-deps: the image's torch is kept) into
#      /tmp/site and runs, each under its own time limit:
#        - benchmarks/bench_fullscale.py at full scale (~2,500 synthetic scans at 128 px, batch 8 of
#          1x32x128x128, fp32 and bf16-mixed; --max-steps cuts the longer retrain epoch, which is
#          then extrapolated);
#        - benchmarks/bench_search.py at 8x16x64x64 (the subnet, GumbelDNAS drawn and pinned to the
#          largest subnet): the search step / subnet step target, after this code's fewer host syncs;
#        - benchmarks/bench_channels_last.py --device cuda (default, random1 subnets and mc3_18);
#        - benchmarks/bench_augment.py --device cuda (augmentation in the loader vs on the GPU).
#      benchmarks/bench_precision.py is left out: it runs on the CPU only (torch.autocast("cpu"), no
#      device option); bench_fullscale.py times both precisions on the GPU instead.
#
# Everything lands in $OUT: bench_fullscale.json, bench_search_gpu_small.json, bench_channels_last_gpu.json,
# bench_augment_gpu.json, versions.txt
# (nvidia-smi, the versions of torch/lightning/nni/monai), one log per command and run_all.log.
set -u
cd "$(dirname "$0")/../.."
WHEELS=.gpu-wheels
PY=${PYTHON:-python3}

if [ "${1:-}" = "--prepare" ]; then
    PY=${PYTHON:-.venv/bin/python}
    set -e
    rm -rf "$WHEELS" && mkdir -p "$WHEELS"
    grep -qx "/$WHEELS/" .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo "/$WHEELS/" >> .git/info/exclude; }
    # The versions the project is tested with here (.venv); Python 3.12 as on the GPU machine.
    $PY -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d "$WHEELS" \
        nni==3.0 monai==1.6.1 nibabel==5.4.2 json-tricks==3.17.3 schema==0.7.8 typeguard==4.1.2 \
        websockets==17.4 pydicom==3.0.2 prettytable==3.18.0 wcwidth==0.9.4 astor==0.8.1 responses==0.26.3
    # nni's wheel is 61 MB, nearly all of it the web UI (nni_node): rewrite it without that folder.
    $PY - "$WHEELS"/nni-3.0-*.whl <<'EOF'
import sys, zipfile
from pathlib import Path

wheel = Path(sys.argv[1])
trimmed = wheel.with_suffix(".trimmed")
with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(trimmed, "w", zipfile.ZIP_DEFLATED) as target:
    for item in source.infolist():
        if item.filename.startswith("nni_node/"):
            continue
        data = source.read(item)
        if item.filename.endswith(".dist-info/RECORD"):
            data = b"".join(line for line in data.splitlines(keepends=True) if not line.startswith(b"nni_node/"))
        target.writestr(item, data)
trimmed.replace(wheel)
EOF
    du -sh "$WHEELS"
    exit 0
fi

: "${OUT:?OUT must name the folder the results go to (the device tool sets it)}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
started=$SECONDS
step() { echo "== $(date +%T) +$((SECONDS - started))s: $*"; }

run_all() {
    step "install the wheels and the project into /tmp/site"
    if ! ls "$WHEELS"/*.whl > /dev/null 2>&1; then
        echo "no wheels in $WHEELS: run 'bash benchmarks/gpu/run_all.sh --prepare' here first and carry $WHEELS"
        return 2
    fi
    timeout 90 $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$WHEELS"/*.whl \
        && timeout 90 $PY -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir \
            --target /tmp/site . \
        || { echo "installing failed"; return 2; }
    export PYTHONPATH=/tmp/site

    {
        nvidia-smi
        echo
        $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())'
        $PY -m pip freeze 2> /dev/null | grep -i -E '^(torch|pytorch-lightning|lightning|nni|monai|torchmetrics|numpy)[=@ ]'
    } > "$OUT/versions.txt" 2>&1
    cat "$OUT/versions.txt"

    # ~1,430 patients (~2,500 scans) written by 16 processes; one search and one retrain epoch per precision.
    step "bench_fullscale.py (limit 300 s)"
    timeout --kill-after=10 300 $PY benchmarks/bench_fullscale.py --accelerator gpu --max-steps 120 \
        --work-dir /tmp/fullscale --out "$OUT/bench_fullscale.json" > "$OUT/bench_fullscale.log" 2>&1
    echo "exit status $? (124: cut at the limit; the JSON holds the stages done)"
    tail -n 3 "$OUT/bench_fullscale.log"

    step "bench_search.py --accelerator gpu --configs small (limit 75 s)"
    timeout --kill-after=10 75 $PY benchmarks/bench_search.py --accelerator gpu --configs small \
        --methods single gumbel-dnas gumbel-dnas-largest --steps 5 --warmup 3 \
        --out "$OUT/bench_search_gpu_small.json" > "$OUT/bench_search.log" 2>&1
    echo "exit status $?"
    tail -n 3 "$OUT/bench_search.log"

    step "bench_channels_last.py --device cuda (limit 60 s)"
    timeout --kill-after=10 60 $PY benchmarks/bench_channels_last.py --device cuda --batch 8 --size 32 128 128 \
        --models default random1 mc3_18 --out "$OUT/bench_channels_last_gpu.json" > "$OUT/bench_channels_last.log" 2>&1
    echo "exit status $?"
    tail -n 3 "$OUT/bench_channels_last.log"

    step "bench_augment.py --device cuda (limit 45 s)"
    timeout --kill-after=10 45 $PY benchmarks/bench_augment.py --device cuda \
        --out "$OUT/bench_augment_gpu.json" > "$OUT/bench_augment.log" 2>&1
    echo "exit status $?"
    tail -n 3 "$OUT/bench_augment.log"
    step "done"
}

run_all 2>&1 | tee "$OUT/run_all.log"
exit "${PIPESTATUS[0]}"
