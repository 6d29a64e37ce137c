#!/bin/bash
# The CPU-scale fair comparison (benchmarks/RESULTS.md, "Fair comparison"), run in a folder holding
# data-ccccii, data-mosmed, data-covidctset written by `nni-covid3d synth` (see README.md here).
COMMON="--seeds 1 --random-archs 3 --widths 16 24 32 48 64 96 --n-cells 2 2 2 1 1 1 --head-channels 256 --search-epochs 16 --retrain-epochs 40 --batch-size 16 --lr 0.004 --size 16 48 48 --bootstrap 1000"
NNI=/work/main/.venv/bin/nni-covid3d
case "$1" in
  ccccii) $NNI benchmark --dataset ccccii --root data-ccccii --out bench-ccccii $COMMON --strategies random-oneshot --baselines mc3_18 ;;
  covidctset) $NNI benchmark --dataset covidctset --root data-covidctset --out bench-covidctset $COMMON --strategies random-oneshot --baselines ;;
  mosmed) $NNI benchmark --dataset mosmed --root data-mosmed --out bench-mosmed $COMMON --strategies random-oneshot --baselines ;;
esac
