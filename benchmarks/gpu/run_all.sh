#!/bin/bash
# The GPU tests and benchmarks in one go, for a lent NVIDIA H200 (16 CPU cores): the limits below add up
# to 8 min 55 s after the install (two pip installs from local files, each limited to 90 s).
#
# How it is launched. The GPU machine reaches no package registry, and a .venv (`make test` /
# `make demo` build one here from the registry) is far over the 64 MiB that travels with the working
# tree. Its image's python3 already holds torch, pytorch-lightning, numpy, scipy, pandas, pillow,
# scikit-learn, tensorboard, torchmetrics, pytest; the rest travels as wheels:
#
#   1. here, once, from the repository root, with the project's venv (`make .venv/.project-installed`):
#          bash benchmarks/gpu/run_all.sh --prepare
#      downloads Python 3.12 wheels of nni 3.0 (without its 190 MB web UI, nni_node, which no
#      benchmark uses), monai, nibabel and the other missing packages into .gpu-wheels/ (about
#      9 MB, listed in .git/info/exclude so that git ignores it);
#   2. optionally, here: OUT=/tmp/rehearsal bash benchmarks/gpu/run_all.sh --rehearse
#      runs every command below on this machine's CPU at toy sizes with the venv's python (about a
#      minute; tests/test_gpu_script.py does this in `make test`);
#   3. through the device tool, from the repository root:
#          run(command="bash benchmarks/gpu/run_all.sh", carry=[".gpu-wheels"], timeout_s=590)
#      which installs the wheels and this project (--no-deps: the image's torch is kept) into
#      /tmp/site and runs, each under its own time limit:
#        - gpu_tests: tests/gpu (pytest): float16/bfloat16 numerics of the search and the retrain,
#          loss scaling with GumbelDNAS's two optimizers, checkpoints across precisions and devices,
#          channels-last, the batch augmentation and the device loader on CUDA;
#        - bench_fullscale: benchmarks/bench_fullscale.py at full scale (~2,500 synthetic scans at
#          128 px, batch 8 of 1x32x128x128, fp32, bf16-mixed and 16-mixed; --max-steps cuts the
#          longer retrain epoch, which is then extrapolated);
#        - bench_fullscale_device: the same data, bf16-mixed, with --loader device --augment-on device
#          (the volumes in GPU memory, no loader workers);
#        - bench_search: benchmarks/bench_search.py at 8x16x64x64 (the subnet, GumbelDNAS drawn and
#          pinned to the largest subnet): the search step / subnet step target, after the fewer host syncs;
#        - bench_channels_last: benchmarks/bench_channels_last.py --device cuda (default, random1, mc3_18);
#        - bench_augment: benchmarks/bench_augment.py --device cuda (augmentation in the loader vs on the GPU).
#      benchmarks/bench_precision.py is left out: it runs on the CPU only (torch.autocast("cpu"), no
#      device option); bench_fullscale.py times the precisions on the GPU instead.
#      Names after the options run only those commands, e.g. a rerun of one that failed:
#          run(command="bash benchmarks/gpu/run_all.sh bench_search", carry=[".gpu-wheels"], timeout_s=200)
#
# Everything lands in $OUT, 8 files (what the device returns at most): versions.txt (nvidia-smi, the
# versions of torch/lightning/nni/monai), bench_fullscale.json, bench_fullscale_device.json,
# bench_search_small.json, bench_channels_last.json, bench_augment.json, commands.log (every command's
# whole output) and run_all.log. The exit status is 0 when every command succeeded.
set -u
cd "$(dirname "$0")/../.."
WHEELS=.gpu-wheels
PY=${PYTHON:-python3}
REHEARSE=0
if [ "${1:-}" = "--rehearse" ]; then
    REHEARSE=1
    PY=${PYTHON:-.venv/bin/python}
    shift
fi

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
failed=0
step() { echo "== $(date +%T) +$((SECONDS - started))s: $*"; }

# timed NAME LIMIT COMMAND...: run COMMAND under LIMIT seconds, its whole output appended to
# $OUT/commands.log (the device returns at most 8 files); a failure is counted and the next command still
# runs (what a command finished before failing stays in $OUT).
timed() {
    local name=$1 limit=$2 status
    shift 2
    if [ ${#ONLY[@]} -gt 0 ] && [[ " ${ONLY[*]} " != *" $name "* ]]; then
        return 0
    fi
    step "$name (limit ${limit} s)"
    echo "== $name: $*" >> "$OUT/commands.log"
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.part" 2>&1
    status=$?
    cat "$OUT/$name.part" >> "$OUT/commands.log"
    echo "exit status $status$([ $status = 124 ] && echo ' (cut at the limit)')" | tee -a "$OUT/commands.log"
    tail -n 3 "$OUT/$name.part"
    rm -f "$OUT/$name.part"
    [ $status = 0 ] || failed=$((failed + 1))
}

ONLY=("$@")  # the commands to run (their names below); none named: all of them
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

if [ "$REHEARSE" = 1 ]; then
    # The same commands on this machine's CPU at toy sizes, with this interpreter and no install: every
    # option and output path is exercised before a GPU run depends on it (tests/test_gpu_script.py).
    ACCELERATOR=cpu DEVICE=cpu
    PRECISIONS=(32-true bf16-mixed)
    FULLSCALE_SIZE=(--patients 24 --synth-size 32 --slices 8 12 --size 8 32 32 --batch-size 4 --max-steps 4
                    --warmup-steps 1)
    SEARCH_ROUNDS=(--methods single gumbel-dnas --steps 1 --warmup 1)
    CHANNELS_LAST_SIZE=(--batch 2 --size 8 32 32 --models default --warmup 1 --rounds 1 --steps 1)
    AUGMENT_SIZE=(--sizes search --batch 2 --slices 20 --warmup 1 --rounds 1 --steps 1)
else
    ACCELERATOR=gpu DEVICE=cuda
    PRECISIONS=(32-true bf16-mixed 16-mixed)
    FULLSCALE_SIZE=(--max-steps 120)
    SEARCH_ROUNDS=(--methods single gumbel-dnas gumbel-dnas-largest --steps 5 --warmup 3)
    CHANNELS_LAST_SIZE=(--batch 8 --size 32 128 128 --models default random1 mc3_18)
    AUGMENT_SIZE=()
fi

run_all() {
    if [ "$REHEARSE" != 1 ]; then
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
    fi

    {
        if command -v nvidia-smi > /dev/null; then nvidia-smi; else echo "(no nvidia-smi)"; fi
        echo
        $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())'
        $PY -m pip freeze 2> /dev/null | grep -i -E '^(torch|pytorch-lightning|lightning|nni|monai|torchmetrics|numpy)[=@ ]'
    } > "$OUT/versions.txt" 2>&1
    cat "$OUT/versions.txt"

    # What only a GPU shows: float16/bfloat16 numerics of the search and the retrain, loss scaling with
    # GumbelDNAS's two optimizers, checkpoints across precisions, channels-last and augmentation on CUDA.
    timed gpu_tests 90 $PY -m pytest tests/gpu -p no:cacheprovider -rA

    # ~1,430 patients (~2,500 scans) written by 16 processes; one search and one retrain epoch per precision.
    timed bench_fullscale 230 $PY benchmarks/bench_fullscale.py --accelerator "$ACCELERATOR" \
        --precisions "${PRECISIONS[@]}" "${FULLSCALE_SIZE[@]}" --work-dir "$WORK/fullscale" \
        --out "$OUT/bench_fullscale.json"

    # The same data and disk cache (written again when bench_fullscale did not run), the volumes held in
    # GPU memory and augmented there: the data wait without loader workers.
    local data=()
    [ -d "$WORK/fullscale/ccccii" ] && data=(--root "$WORK/fullscale/ccccii")
    timed bench_fullscale_device 90 $PY benchmarks/bench_fullscale.py --accelerator "$ACCELERATOR" \
        --precisions bf16-mixed "${FULLSCALE_SIZE[@]}" "${data[@]}" --loader device --augment-on device \
        --work-dir "$WORK/fullscale" --out "$OUT/bench_fullscale_device.json"

    timed bench_search 60 $PY benchmarks/bench_search.py --accelerator "$ACCELERATOR" --configs small \
        "${SEARCH_ROUNDS[@]}" --out "$OUT/bench_search_small.json"

    timed bench_channels_last 40 $PY benchmarks/bench_channels_last.py --device "$DEVICE" "${CHANNELS_LAST_SIZE[@]}" \
        --out "$OUT/bench_channels_last.json"

    timed bench_augment 25 $PY benchmarks/bench_augment.py --device "$DEVICE" "${AUGMENT_SIZE[@]}" \
        --out "$OUT/bench_augment.json"
    step "done: $failed command(s) failed"
    [ $failed = 0 ]
}

run_all 2>&1 | tee "$OUT/run_all.log"
exit "${PIPESTATUS[0]}"
