#!/usr/bin/env bash
# The engine and utility benchmarks on one CUDA GPU in bf16, in one go (a lent GPU is short-lived).
#
#   bash benchmarks/gpu_suite.sh OUT_DIR [BASE_DIR] [DEADLINE_S]
#
# Runs in parallel, each under a deadline so that whatever finished comes back:
#   dp_step.txt        benchmarks/bench_dp_step.py, workloads a (CPU-sized), e and f (GPU-sized)
#   dp_step_g.txt      the same, workload (g): Llama-3.2-1B shapes, T = 1024, batch 8 (after it)
#   u_seed{0,2,3,4}.txt  benchmarks/bench_utility.py at its defaults (ε = 8, 40k banking traces,
#                      300 steps x 256), private seeds 0, 2, 3 and 4 (seed 1 is the public data's)
#   u_n80k.txt         the same at 80k traces and expected batch 512 (same sampling rate)
# The utility runs are mostly single-threaded data preparation before they reach the GPU, so they
# are pinned to other cores than the engine benchmark, and their GPU work overlaps the tail of it:
# read dp_step.txt's ratios (same run, same contention for every mode), not its absolute times.
set -u
OUT=${1:?usage: gpu_suite.sh OUT_DIR [BASE_DIR] [DEADLINE_S]}
BASE_DIR=${2:-$HOME/.cache/privacy-finetuner/bench}
DEADLINE=${3:-420}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}

pin() {  # pin CORES CMD...: taskset where there is one
    local cores=$1
    shift
    if command -v taskset >/dev/null; then taskset -c "$cores" "$@"; else "$@"; fi
}

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    nproc
    $PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'peft', peft.__version__)"
} >"$OUT/gpu.txt" 2>&1

utility() {  # utility NAME CORES ARGS...
    local name=$1 cores=$2
    shift 2
    OMP_NUM_THREADS=2 pin "$cores" timeout "$DEADLINE" $PY benchmarks/bench_utility.py \
        --base-dir "$BASE_DIR" --device cuda --precision bf16 --json "$@" \
        >"$OUT/u_$name.txt" 2>&1
    echo "exit $?" >>"$OUT/u_$name.txt"
}

utility seed0 4-5 --private-seed 0 --physical-batch 256 &
utility seed2 6-7 --private-seed 2 --physical-batch 256 &
utility seed3 8-9 --private-seed 3 --physical-batch 256 &
utility seed4 10-11 --private-seed 4 --physical-batch 256 &
utility n80k 12-15 --n 80000 --batch-size 512 --physical-batch 512 &

pin 0-3 timeout "$DEADLINE" $PY benchmarks/bench_dp_step.py --device cuda --precision bf16 \
    --workloads a,e,f --rounds 2 --steps 8 --warmup 3 >"$OUT/dp_step.txt" 2>&1
echo "exit $?" >>"$OUT/dp_step.txt"
# (g): Llama-3.2-1B shapes at full depth, T = 1024, batch 8, full and LoRA r = 16; non-private
# and the engine alternate in one process (FLOPs, ops, syncs, peak GPU memory, time).
pin 0-3 timeout "$DEADLINE" $PY benchmarks/bench_dp_step.py --device cuda --workloads g \
    --g-layers 16 --g-seq 1024 --g-batch 8 --g-rounds 5 --g-meta 0 >"$OUT/dp_step_g.txt" 2>&1
echo "exit $?" >>"$OUT/dp_step_g.txt"
wait
date -u >>"$OUT/gpu.txt"
