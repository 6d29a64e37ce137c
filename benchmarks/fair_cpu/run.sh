#!/bin/bash
# The CPU-scale fair comparison (benchmarks/RESULTS.md, "Fair comparison"), run in a folder holding the
# phantoms, written at the input's in-plane size (README.md here):
#   nni-covid3d synth --layout ccccii --out data-ccccii --patients 150 --seed 0 --size 48 --slices 20 36 --involvement 0.2 0.5
#   nni-covid3d synth --layout covidctset --out data-covidctset --patients 150 --seed 0 --size 48 --slices 20 36 --involvement 0.2 0.5
#   nni-covid3d synth --layout mosmed --out data-mosmed --patients 150 --seed 0 --size 48 --slices 20 36
# CC-CCII ran as "ccccii" and "ccccii-mc3" side by side on one output folder (each model trained once,
# by the process that claimed it), then "ccccii-all" assembled the table from their records.
COMMON="--seeds 2 --random-archs 3 --widths 16 24 32 48 64 96 --n-cells 2 2 2 1 1 1 --head-channels 256 --search-epochs 16 --retrain-epochs 40 --batch-size 16 --lr 0.004 --size 16 48 48 --bootstrap 1000"
NNI=${NNI:-nni-covid3d}
export OMP_NUM_THREADS=1
case "$1" in
  ccccii) $NNI benchmark --dataset ccccii --root data-ccccii --out bench-ccccii $COMMON --strategies random-oneshot darts --baselines ;;
  ccccii-mc3) $NNI benchmark --dataset ccccii --root data-ccccii --out bench-ccccii $COMMON --strategies --baselines mc3_18 ;;
  ccccii-all) $NNI benchmark --dataset ccccii --root data-ccccii --out bench-ccccii $COMMON --strategies random-oneshot darts --baselines mc3_18 ;;
  covidctset) $NNI benchmark --dataset covidctset --root data-covidctset --out bench-covidctset $COMMON --strategies random-oneshot --baselines ;;
  mosmed) $NNI benchmark --dataset mosmed --root data-mosmed --out bench-mosmed $COMMON --strategies random-oneshot --baselines ;;
  *) echo "usage: $0 ccccii|ccccii-mc3|ccccii-all|covidctset|mosmed" >&2; exit 2 ;;
esac
