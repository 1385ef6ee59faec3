#!/usr/bin/env bash
# GPU figures in one go, for a machine with a CUDA device (a lent GPU is usually lent for minutes).
# Each part is time-boxed and appends JSON lines to $RESULTS/<part>.jsonl (stderr to <part>.log),
# so whatever finished is kept when a later part runs out of time.
#
#   benchmarks/gpu_bench.sh smoke airline shopping
#
#   smoke     scripts/gpu_smoke.sh: a few hundred MiniLM fine-tune steps, samples/s (SMOKE_STEPS, 300)
#   airline   bench_train.py --part airline on CUDA at the CPU's batch size (32), so the figures
#             compare with the CPU ones: one fine-tune per dict in AIRLINE_VARIANTS (train.*
#             overrides), AIRLINE_EPOCHS epochs (4), the part stopped after AIRLINE_SECONDS (170)
#   shopping  bench_train.py --part shopping on CUDA: small BERT pre-trained for SHOP_MINUTES (3)
#             with SHOP_SETS (--set options), then fine-tuned (SHOP_EPOCHS, 3) once per dict in SHOP_VARIANTS
#
# PY (python), RESULTS (/tmp/gpu_bench) and FBK_TRAIN__BASE_MODEL (the packaged MiniLM) as usual.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RESULTS=${RESULTS:-/tmp/gpu_bench}
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false MLFLOW_ENABLE_TELEMETRY=false

DEVICE=${DEVICE:-cuda}  # cpu: a dry run of the script on a machine without a GPU
BENCH_ARGS=${BENCH_ARGS:-}  # more bench_train.py options, e.g. --max-train-samples 300 for a dry run
AIRLINE_VARIANTS=${AIRLINE_VARIANTS:-'[{"seed": 13}, {"seed": 7}, {"seed": 21}]'}
SHOP_VARIANTS=${SHOP_VARIANTS:-'[{}]'}
SHOP_SETS=${SHOP_SETS:-"--set pretrain_max_length=96 --set max_length=96 --set pretrain_batch_size=256 --set pretrain_learning_rate=1e-3 --set learning_rate=2e-4 --set freeze_word_embeddings=false --set rdrop_alpha=0 --set cuda_batch_size=32"}

run_part() {  # name, seconds, command...
  local name=$1 secs=$2; shift 2
  echo "== $name (at most ${secs}s): $*" >&2
  local start=$SECONDS
  timeout --signal=TERM --kill-after=10 "$secs" "$@" > >(tee -a "$RESULTS/$name.jsonl") 2> >(tee -a "$RESULTS/$name.log" >&2)
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - start))s" >&2
  # a part cut by its time box (124) printed what it finished; any other failure fails the script
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]; then failed="$failed $name"; fi
}

failed=""

for part in "$@"; do
  case $part in
    smoke) run_part smoke 150 env PY="$PY" scripts/gpu_smoke.sh "${SMOKE_STEPS:-300}" ;;
    airline) run_part airline "${AIRLINE_SECONDS:-170}" "$PY" benchmarks/bench_train.py --part airline --epochs "${AIRLINE_EPOCHS:-4}" \
               --set device="$DEVICE" --set cuda_batch_size=32 --variants "$AIRLINE_VARIANTS" $BENCH_ARGS ;;
    shopping) run_part shopping "$(( ${SHOP_MINUTES:-3} * 60 + ${SHOP_EXTRA_SECONDS:-150} ))" "$PY" benchmarks/bench_train.py --part shopping \
               --epochs "${SHOP_EPOCHS:-3}" --pretrain-steps 1000000 --set device="$DEVICE" --set pretrain_max_minutes="${SHOP_MINUTES:-3}" $SHOP_SETS --variants "$SHOP_VARIANTS" $BENCH_ARGS ;;
    *) echo "unknown part: $part (smoke, airline, shopping)" >&2; exit 2 ;;
  esac
done
if [ -n "$failed" ]; then
  echo "failed:$failed" >&2
  exit 1
fi
