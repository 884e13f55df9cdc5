#!/usr/bin/env bash
# Run the whole Qwen3-TTS benchmark on a CUDA machine, every system in its own process, side by side in one run.
#
# Usage (repo root; wheel folders .whl/ours, .whl/fq3 and, for the transformers 5 stack, .whl/t5, as in bench/README.md):
#   bench/run_all.sh [STEP ...]
# Steps (default: all, in this order): install build bandwidth reference fq3 ours compile eager tests;
#   also ours5 (our engine on the transformers 5 stack of .whl/t5, same measurement as ours; not in the default run)
#   also profile (bench/profile_frame.py: kernel table and micro-timings, not part of the default run)
# Environment: OUT (results folder, default /tmp/bench-out), SIZES (default "0.6b 1.7b"), CKPTS (default /tmp/ckpts),
#   FRAMES (default 100), REPEATS (default 3; the reference uses at most 2: it takes ~0.1 s a frame),
#   STOP_AT (optional, epoch seconds: steps that would start later are skipped, to fit a time limit).
# Results: $OUT/bench.tgz (json/<system>-<size>.json and logs/*.log), refreshed after every step so a run cut short
# still returns what it finished; a summary table is printed at the end.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/bench-out}
SIZES=${SIZES:-"0.6b 1.7b"}
CKPTS=${CKPTS:-/tmp/ckpts}
FRAMES=${FRAMES:-100}
REPEATS=${REPEATS:-3}
WORK=/tmp/bench-work
SITE_OURS=/tmp/site-ours
SITE_FQ3=/tmp/site-fq3
SITE_T5=/tmp/site-t5
STEPS=${*:-install build bandwidth reference fq3 ours compile eager tests}

mkdir -p "$OUT" "$WORK/json" "$WORK/logs"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# ours and the reference: qwen-tts 0.1.1 + transformers 4.57.3; faster-qwen3-tts: qwen-tts-hf + transformers 5.16.1.
# Both install the module qwen_tts, so each stack has its own folder and its own processes.
OURS_PATH="$REPO:$SITE_OURS:$SITE_OURS/project"
FQ3_PATH="$SITE_FQ3"
# Our engine on transformers 5: .whl/t5 first (transformers 5.24 and its hub), then the shared wheels of .whl/ours.
T5_PATH="$REPO:$SITE_T5:$SITE_OURS:$SITE_OURS/project"

pack() {
  tar czf "$OUT/bench.tgz.tmp" -C "$WORK" json logs && mv "$OUT/bench.tgz.tmp" "$OUT/bench.tgz"
}

# run NAME TIMEOUT PYTHONPATH CMD...: one process, its log kept, a failure reported and the run carried on.
run() {
  local name=$1 limit=$2 path=$3
  shift 3
  if [ -n "${STOP_AT:-}" ] && [ "$(date +%s)" -ge "$STOP_AT" ]; then
    echo "=== $name skipped: past STOP_AT"
    return
  fi
  echo "=== $name ($(date -u +%T))"
  if PYTHONPATH="$path" timeout "$limit" "$@" >"$WORK/logs/$name.log" 2>&1; then
    echo "    ok"
  else
    echo "    FAILED (exit $?), last lines:"
    tail -n 15 "$WORK/logs/$name.log" | sed 's/^/    /'
  fi
  pack
}

for step in $STEPS; do
  case $step in
  install)
    run install-ours 120 "" python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE_OURS" "$REPO"/.whl/ours/*.whl
    # The project's own metadata (its backend entry points) beside the wheels; its code still comes from $REPO,
    # which is first on PYTHONPATH.
    run install-project 120 "" python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile \
      --no-cache-dir --upgrade --target "$SITE_OURS/project" "$REPO"
    run install-fq3 120 "" python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE_FQ3" "$REPO"/.whl/fq3/*.whl
    if [ -d "$REPO/.whl/t5" ]; then
      run install-t5 120 "" python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE_T5" "$REPO"/.whl/t5/*.whl
    fi
    ;;
  build)
    # One process per size, side by side: each build is CPU-bound (random init + safetensors write), ~1.5 min.
    for size in $SIZES; do
      run "build-$size" 300 "$OURS_PATH" python3 "$REPO/bench/build_checkpoints.py" --root "$CKPTS" --sizes "$size" &
    done
    wait
    ;;
  bandwidth)
    run bandwidth 60 "" python3 "$REPO/bench/bandwidth.py" --out "$WORK/json/bandwidth.json"
    ;;
  reference)
    for size in $SIZES; do
      run "reference-$size" 300 "$SITE_OURS" python3 "$REPO/bench/bench_reference.py" --ckpt "$CKPTS/$size-custom_voice" \
        --size "$size" --frames "$FRAMES" --repeats "$((REPEATS < 2 ? REPEATS : 2))" --out "$WORK/json/reference-$size.json"
    done
    ;;
  fq3)
    for size in $SIZES; do
      run "fq3-$size" 300 "$FQ3_PATH" python3 "$REPO/bench/bench_faster_qwen3_tts.py" --ckpt "$CKPTS/$size-custom_voice" \
        --size "$size" --frames "$FRAMES" --repeats "$REPEATS" --out "$WORK/json/fq3-$size.json"
    done
    ;;
  ours | compile | eager)
    mode=$step
    [ "$step" = ours ] && mode=graphs
    for size in $SIZES; do
      run "ours-$mode-$size" 400 "$OURS_PATH" python3 "$REPO/bench/bench_qwen3.py" --ckpt "$CKPTS/$size-custom_voice" \
        --size "$size" --frames "$FRAMES" --repeats "$REPEATS" --mode "$mode" --out "$WORK/json/ours-$mode-$size.json"
    done
    ;;
  ours5)
    for size in $SIZES; do
      run "ours5-graphs-$size" 400 "$T5_PATH" python3 "$REPO/bench/bench_qwen3.py" --ckpt "$CKPTS/$size-custom_voice" \
        --size "$size" --frames "$FRAMES" --repeats "$REPEATS" --mode graphs --out "$WORK/json/ours5-graphs-$size.json"
    done
    ;;
  profile)
    for size in $SIZES; do
      run "profile-$size" 300 "$OURS_PATH" python3 "$REPO/bench/profile_frame.py" --ckpt "$CKPTS/$size-custom_voice" \
        --size "$size" --out "$WORK/logs"
    done
    ;;
  tests)
    # The engine's GPU parity tests, the GPU streaming decoder, and the kaldi patch against the real torchaudio
    # (which imports on that machine) and its goldens on CUDA.
    S2S_QWEN3_CKPT_DIR=$CKPTS run cuda-tests 420 "$OURS_PATH" python3 -m pytest -q -s -rs -p no:cacheprovider \
      "$REPO/tests/test_qwen3_cuda.py" "$REPO/tests/test_codec_stream.py" "$REPO/tests/test_patch_torchaudio.py"
    ;;
  *)
    echo "unknown step $step (steps: install build bandwidth reference fq3 ours ours5 compile eager profile tests)" >&2
    exit 2
    ;;
  esac
done

python3 "$REPO/bench/summarize.py" --json "$WORK/json" --table-only
pack
