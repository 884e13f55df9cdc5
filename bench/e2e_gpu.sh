#!/usr/bin/env bash
# The GPU side of issue 10: the LLM decode benchmark and the end-to-end turn on the real pipeline, on the offline
# GPU machine. What it needs does not fit one device call (64 MiB), so it comes in five calls on the same warm
# machine (bench/e2e_payload.sh prepares the folders here; bench/README.md has the exact calls):
#
#   bench/e2e_gpu.sh stt         carry .whl/e2e-stt                      faster-whisper, CTranslate2, silero-vad, gguf
#   bench/e2e_gpu.sh ours llm    carry .whl/ours .whl/e2e-whisper-a      our stack; LLM decode bench + CUDA test
#   bench/e2e_gpu.sh whisper     carry .whl/e2e-whisper-b build/e2e-questions   the rest of Whisper, the questions
#   bench/e2e_gpu.sh turn-a      carry .whl/e2e-turn-a                   half of the end-of-turn model (SmolLM2 GGUF)
#   bench/e2e_gpu.sh turn-b e2e  carry .whl/e2e-turn-b                   its other half; the pipeline, 24 questions
#   bench/e2e_gpu.sh parts                                               the STT and the end-of-turn rating, timed
#
# Installs go to /tmp (kept while the machine stays warm: start each call right after the previous one).
# Extra arguments: LLM_ARGS for bench/llm_decode.py, E2E_ARGS for bench/e2e.py (e.g. "--min-silence-ms 300").
# Results: $OUT/llm/llm-decode.{md,json}, $OUT/llm-cuda-test.log, $OUT/e2e/e2e-gpu.{md,json}, $OUT/*.log.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/bench-out}
SITE_OURS=/tmp/site-ours
SITE_STT=/tmp/site-stt
WHISPER=/tmp/whisper-tiny.en
TURN=/tmp/turn-model
QUESTIONS=/tmp/e2e-questions
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
install() {  # install FOLDER TARGET
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$2" "$1"/*.whl
}
need() {  # need PATH STEP: stop with what to do when an earlier call's result is gone
  [ -e "$1" ] || { echo "$1 is missing: run 'bench/e2e_gpu.sh $2' first, on the same warm machine" >&2; exit 1; }
}

for step in "${@:-}"; do
  case $step in
  stt)
    install "$REPO/.whl/e2e-stt" "$SITE_STT" && echo "installed into $SITE_STT"
    ;;
  ours)
    install "$REPO/.whl/ours" "$SITE_OURS" && echo "installed into $SITE_OURS"
    mkdir -p "$WHISPER" && cp "$REPO/.whl/e2e-whisper-a/model.bin.part-a" "$WHISPER/"
    ;;
  llm)
    need "$SITE_OURS" ours
    # shellcheck disable=SC2086  # LLM_ARGS is split into arguments on purpose
    PYTHONPATH="$REPO:$SITE_OURS" timeout 420 python3 "$REPO/bench/llm_decode.py" --out "$OUT/llm" ${LLM_ARGS:-} 2>&1 \
      | tee "$OUT/llm-decode.log"
    PYTHONPATH="$REPO:$SITE_OURS" timeout 120 python3 -m pytest -q -rs -p no:cacheprovider -m cuda \
      "$REPO/tests/test_llm_decode.py" 2>&1 | tee "$OUT/llm-cuda-test.log"
    ;;
  whisper)
    need "$WHISPER/model.bin.part-a" ours
    cp "$REPO"/.whl/e2e-whisper-b/* "$WHISPER/"
    cat "$WHISPER/model.bin.part-a" "$WHISPER/model.bin.part-b" > "$WHISPER/model.bin"
    echo "$(cat "$WHISPER/model.bin.sha256")  $WHISPER/model.bin" | sha256sum -c - || exit 1
    rm -rf "$QUESTIONS" && cp -r "$REPO/build/e2e-questions" "$QUESTIONS"
    ;;
  turn-a)
    mkdir -p "$TURN" && cp "$REPO/.whl/e2e-turn-a/model.gguf.part-a" "$TURN/"
    ;;
  turn-b)
    need "$TURN/model.gguf.part-a" turn-a
    cp "$REPO"/.whl/e2e-turn-b/* "$TURN/"
    cat "$TURN/model.gguf.part-a" "$TURN/model.gguf.part-b" > "$TURN/SmolLM2-135M-Instruct.Q4_1.gguf"
    echo "$(cat "$TURN/model.gguf.sha256")  $TURN/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c - || exit 1
    rm "$TURN"/model.gguf.part-*
    ;;
  parts)
    need "$WHISPER/model.bin" whisper
    need "$TURN/SmolLM2-135M-Instruct.Q4_1.gguf" turn-b
    PYTHONPATH="$REPO:$SITE_OURS:$SITE_STT" timeout 300 python3 "$REPO/bench/turn_parts.py" --questions "$QUESTIONS" \
      --whisper "$WHISPER" --turn-model "$TURN/SmolLM2-135M-Instruct.Q4_1.gguf" --out "$OUT/parts" 2>&1 \
      | tee "$OUT/turn-parts.log"
    ;;
  e2e)
    need "$SITE_OURS" ours
    need "$SITE_STT" stt
    need "$WHISPER/model.bin" whisper
    need "$TURN/SmolLM2-135M-Instruct.Q4_1.gguf" turn-b
    # shellcheck disable=SC2086  # E2E_ARGS is split into arguments on purpose
    PYTHONPATH="$REPO:$SITE_OURS:$SITE_STT" timeout 540 python3 "$REPO/bench/e2e.py" --config gpu \
      --out "$OUT/e2e" --whisper "$WHISPER" --ckpts /tmp/ckpts --questions "$QUESTIONS" \
      --turn-model "$TURN/SmolLM2-135M-Instruct.Q4_1.gguf" --replies /tmp/e2e-replies.wav ${E2E_ARGS:-} 2>&1 \
      | tee "$OUT/e2e-gpu.log"
    ;;
  *)
    echo "usage: bench/e2e_gpu.sh STEP... (steps: stt ours llm whisper turn-a turn-b parts e2e)" >&2
    exit 2
    ;;
  esac
done
