#!/usr/bin/env bash
# Check regression-lab on a GPU machine, in about five minutes, printing every figure:
#   1. install the project (into the current Python, keeping a CUDA torch that is already there);
#   2. `fit` with the default accelerator=auto, and show that it chose CUDA;
#   3. predict x = 10 from the checkpoint it wrote;
#   4. the landscape (201 x 201) on the GPU;
#   5. the benchmark at GPU scale (10 million samples, batch 65536).
#
#   bash scripts/gpu_check.sh                 # on the GPU machine, from the repository root
#   bash scripts/gpu_check.sh --cpu           # the same steps on a CPU at tiny sizes (what CI can check)
#   bash scripts/gpu_check.sh --no-install    # skip step 1
#   bash scripts/gpu_check.sh --json PATH      # also keep the benchmark's JSON
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
cpu=0
install=1
json=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) cpu=1 ;;
    --no-install) install=0 ;;
    --json) json=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift ;;
    *) echo "usage: bash scripts/gpu_check.sh [--cpu] [--no-install] [--json PATH]" >&2; exit 2 ;;
  esac
  shift
done
PY=${PYTHON:-python3}
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # the steps run elsewhere
export MPLBACKEND=Agg PYTHONUNBUFFERED=1

step() { printf '\n=== %s\n' "$*"; }

if [ "$install" = 1 ]; then
  step "install"
  "$PY" -m pip install --quiet -e "$repo"
fi
step "environment"
"$PY" - <<'PY'
import torch, lightning
print(f"torch {torch.__version__}, lightning {lightning.__version__}, CUDA available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"device: {torch.cuda.get_device_name(0)}, bf16: {torch.cuda.is_bf16_supported()}")
PY
if [ "$cpu" = 0 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device: run with --cpu to check the steps on a CPU" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if [ "$cpu" = 1 ]; then epochs=(--trainer.max_epochs 50); res=21; quick=(--quick); else epochs=(); res=201; quick=(); fi

step "fit (accelerator=auto)"
"$PY" -m regression_lab fit "${epochs[@]}" --trainer.enable_progress_bar false 2>&1 | tee fit.log | grep -E "GPU available|Model prediction|Checkpoint:"
if [ "$cpu" = 0 ]; then
  grep -q "GPU available: True (cuda), used: True" fit.log || { echo "fit did not choose CUDA" >&2; exit 1; }
fi

step "fit (bf16-mixed, 16-mixed where the GPU has them)"
if [ "$cpu" = 0 ]; then
  for precision in bf16-mixed 16-mixed; do
    "$PY" -m regression_lab fit --trainer.precision "$precision" --trainer.enable_progress_bar false --trainer.enable_model_summary false 2>&1 | grep -E "Model prediction" | sed "s/^/$precision: /"
  done
else
  echo "skipped on CPU"
fi

step "predict from the checkpoint"
"$PY" -m regression_lab predict --x 10 --x 11

step "landscape ($res x $res)"
device=cuda; [ "$cpu" = 1 ] && device=cpu
time "$PY" -m regression_lab landscape --resolution "$res" --device "$device" --out landscape

step "benchmark"
accelerator=gpu; [ "$cpu" = 1 ] && accelerator=cpu
"$PY" "$repo/scripts/benchmark.py" --accelerator "$accelerator" "${quick[@]}" --json "${json:-$work/bench.json}"
step "done"
