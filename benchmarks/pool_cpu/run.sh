#!/bin/bash
# The powered benchmark on the 2-core CPU (benchmarks/RESULTS.md, "Powered benchmark"): a random pool of 24
# architectures trained once, GumbelDNAS (5 search seeds) and NNI's strategies (3 seeds each) compared with it
# on a separate cohort of 1,000 test patients. Run in an empty folder:
#   bash run.sh data        # the training root (100 patients) and the independent test cohort (1,000 patients)
#   bash run.sh pool &  bash run.sh pool    # two processes share the work on one output folder
#   bash run.sh pool --variant search_epochs=64 --variant search_epochs=64,arch_credit=choice
#                           # GumbelDNAS variants on the same pool (extra arguments go to the command)
# A stopped run continues where it stopped; a finished model is never trained again.
set -euo pipefail
NNI=${NNI:-nni-covid3d}
export OMP_NUM_THREADS=1
PHANTOMS="--size 48 --slices 20 36 --involvement 0.15 0.4"
SPACE="--widths 16 24 32 48 64 96 --n-cells 2 2 2 1 1 1 --head-channels 256"
RECIPE="--search-epochs 16 --retrain-epochs 20 --batch-size 16 --lr 0.004 --size 16 48 48 --bootstrap 1000"
STRATEGIES=${STRATEGIES:-random-oneshot darts gumbel-darts}
case "${1:-}" in
  data)
    $NNI synth --layout ccccii --out data-train --patients 100 --seed 0 $PHANTOMS
    $NNI synth --layout ccccii --out data-test --patients 1000 --seed 1 $PHANTOMS ;;
  pool)
    shift
    $NNI benchmark --pool --dataset ccccii --root data-train --test-root data-test --out pool-ccccii $SPACE $RECIPE \
      --random-archs 24 --seeds 5 --strategies $STRATEGIES --strategy-seeds 3 --training-seeds 2 "$@" ;;
  *) echo "usage: $0 data|pool" >&2; exit 2 ;;
esac
