#!/bin/bash
# One depth sweep spread over a SLURM array: task i of n trains grid points i, i+n, i+2n, ...
# (crl sweep --shard-index/--num-shards), one GPU per task, all writing into one shared sweep
# directory. Finished grid points are skipped, so resubmitting the same array resumes the sweep.
#
#   sbatch --array=0-4 experiments/slurm_sweep.sh runs/sweeps/humanoid \
#       --preset paper --env humanoid --depths 4 8 16 32 64 --num-seeds 3
#
# After the array finishes, rebuild the table and print the summary:
#   crl sweep --sweep-dir runs/sweeps/humanoid --summarize-only
#
#SBATCH --job-name=crl-sweep
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --time=24:00:00
#SBATCH --output=slurm-%A_%a.out
set -euo pipefail

if [[ $# -lt 1 || -z "${SLURM_ARRAY_TASK_ID:-}" ]]; then
    echo "usage: sbatch --array=0-(N-1) experiments/slurm_sweep.sh SWEEP_DIR [crl sweep/train flags]" >&2
    exit 2
fi
sweep_dir=$1
shift
num_shards=$((SLURM_ARRAY_TASK_MAX - SLURM_ARRAY_TASK_MIN + 1))
shard_index=$((SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN))

# The environment (venv or module) that provides `crl` is activated by the caller's job setup,
# e.g. `source .venv/bin/activate` in ~/.bashrc or an #SBATCH --export line.
exec crl sweep --sweep-dir "$sweep_dir" --shard-index "$shard_index" --num-shards "$num_shards" \
    --quiet "$@"
