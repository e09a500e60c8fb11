#!/usr/bin/env bash
# Check regression-lab on a GPU machine, printing every figure:
#   1. install the project (into the current Python, keeping a CUDA torch that is already there);
#   2. `fit` with the default accelerator=auto, and show that it chose CUDA;
#   3. predict x = 10 from the checkpoint it wrote;
#   4. the landscape (201 x 201) on the GPU;
#   5. `fit` with bf16-mixed and 16-mixed precision;
#   6. a seed ensemble of 1,000,000 members (400 epochs), timed;
#   7. the benchmark at GPU scale (10 million samples, batch 65536).
# A failed step does not stop the later ones (a GPU machine's time is scarce: one run should
# report everything); the summary names the failed steps and the exit status is 1 if any failed.
#
#   bash scripts/gpu_check.sh                 # on the GPU machine, from anywhere
#   bash scripts/gpu_check.sh --cpu           # the same steps on a CPU at tiny sizes (what CI can check)
#   bash scripts/gpu_check.sh --no-install    # skip step 1
#   bash scripts/gpu_check.sh --json PATH     # also keep the benchmark's JSON
#   PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR bash scripts/gpu_check.sh   # a machine without a package index
set -uo pipefail
caller=$(pwd)  # a relative --json PATH is the caller's
cd "$(dirname "$0")/.."
repo=$(pwd)
cpu=0
install=1
json=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) cpu=1 ;;
    --no-install) install=0 ;;
    --json)
      [ $# -ge 2 ] || { echo "gpu_check.sh: --json needs a path" >&2; exit 2; }
      json=$(cd "$caller" && cd "$(dirname "$2")" && pwd)/$(basename "$2") || exit 2
      shift ;;
    *) echo "usage: bash scripts/gpu_check.sh [--cpu] [--no-install] [--json PATH]" >&2; exit 2 ;;
  esac
  shift
done
PY=${PYTHON:-python3}
case "$PY" in */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;; esac  # the steps run elsewhere
export MPLBACKEND=Agg PYTHONUNBUFFERED=1

failed=()
# step NAME COMMAND...: print a header, run the command, time it, and remember a failure.
step() {
  local name=$1; shift
  printf '\n=== %s\n' "$name"
  local start=$SECONDS
  if "$@"; then
    printf -- '--- %s: ok (%d s)\n' "$name" $((SECONDS - start))
  else
    printf -- '--- %s: FAILED (%d s)\n' "$name" $((SECONDS - start))
    failed+=("$name")
  fi
}

install_project() { "$PY" -m pip install --quiet -e "$repo"; }
environment() {
  "$PY" - <<'PY'
import lightning, torch
print(f"torch {torch.__version__}, lightning {lightning.__version__}, CUDA available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"device: {torch.cuda.get_device_name(0)}, bf16: {torch.cuda.is_bf16_supported()}")
PY
}
fit_auto() {
  "$PY" -m regression_lab fit "${fit_args[@]}" --trainer.enable_progress_bar false >fit.log 2>&1
  local rc=$?
  grep -E "GPU available|Model prediction|Checkpoint:|Error|error" fit.log
  [ $rc = 0 ] || return $rc
  if [ "$cpu" = 0 ]; then
    grep -q "GPU available: True (cuda), used: True" fit.log || { echo "fit did not choose CUDA" >&2; return 1; }
  fi
}
fit_mixed() {
  local precision rc=0
  for precision in bf16-mixed 16-mixed; do
    "$PY" -m regression_lab fit --trainer.precision "$precision" --trainer.enable_progress_bar false \
      --trainer.enable_model_summary false >"fit-$precision.log" 2>&1 || rc=1
    grep -E "Model prediction|Error|error" "fit-$precision.log" | sed "s/^/$precision: /"
  done
  return $rc
}
predict() { "$PY" -m regression_lab predict --x 10 --x 11; }
ensemble() {
  local start=$SECONDS
  "$PY" -m regression_lab fit --model.num_seeds "$members" --trainer.accelerator "$accelerator" \
    --trainer.enable_progress_bar false --trainer.enable_model_summary false >ensemble.log 2>&1
  local rc=$?
  grep -E "GPU available|Ensemble prediction|Error|error" ensemble.log
  echo "$members members x 400 epochs: $((SECONDS - start)) s as a process"
  return $rc
}
landscape() { "$PY" -m regression_lab landscape --resolution "$res" --device "$device" --out landscape; }
benchmark() { "$PY" "$repo/scripts/benchmark.py" --accelerator "$accelerator" "${quick[@]}" --json "${json:-$work/bench.json}"; }

if [ "$install" = 1 ]; then
  step "install" install_project
fi
step "environment" environment
if [ "$cpu" = 0 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device: run with --cpu to check the steps on a CPU" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work" || exit 1
if [ "$cpu" = 1 ]; then
  fit_args=(--trainer.max_epochs 50 --trainer.accelerator cpu); res=21; quick=(--quick); device=cpu; accelerator=cpu
  members=2000
else
  fit_args=(); res=201; quick=(); device=cuda; accelerator=gpu; members=1000000
fi

step "fit (accelerator=auto)" fit_auto
step "predict from the checkpoint" predict  # the newest run's: the fit just above
step "landscape ($res x $res)" landscape
if [ "$cpu" = 0 ]; then
  step "fit (bf16-mixed, 16-mixed)" fit_mixed
fi
step "ensemble ($members members)" ensemble
step "benchmark" benchmark

printf '\n=== done\n'
if [ ${#failed[@]} -gt 0 ]; then
  printf 'failed steps: %s\n' "$(IFS=';'; echo "${failed[*]}")" >&2
  exit 1
fi
echo "every step passed"
