"""The ``s2s`` command.

    s2s [--config FILE]... [--set section.key=value]... [-v] COMMAND
    s2s run [--input WAV|FOLDER] [--text TEXT] [--output WAV]   the assistant (microphone and speaker by default)
    s2s say TEXT -o OUT.wav                                     text to speech alone
    s2s check                                                   what is installed, found and patched
    s2s service / build-checkpoint / serve / wyoming ...        registered when their modules are present

Exit status: 0 done, 1 a failure at start (the message says what to do), 2 a configuration or usage error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import platform
import sys
import threading
from importlib import metadata

import patches
from s2s import __version__, reference_env, registry
from s2s.config import Config, load_config
from s2s.run import UsageError, run

log = logging.getLogger("s2s")

OPTIONAL_COMMANDS = {
    "service": ("s2s.service", "install, remove or inspect the systemd service"),
    "build-checkpoint": ("s2s.checkpoint_builder", "write a random-weight Qwen3-TTS checkpoint (tests, benchmarks)"),
    "serve": ("s2s.server.serve", "OpenAI-compatible speech server (/v1/audio/speech, /v1/audio/transcriptions)"),
    "wyoming": ("s2s.server.wyoming_service", "Wyoming TTS and STT services for Home Assistant"),
}
"""Subcommand -> (module with add_parser(subparsers) and main(args), help). Imported only when used."""

def _global_options(suppress: bool) -> argparse.ArgumentParser:
    """--config / --set / -v, accepted before and after the subcommand."""
    default = argparse.SUPPRESS if suppress else None
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--config", action="append", metavar="FILE", default=default,
                        help="TOML file merged over the defaults (repeatable; e.g. configs/jetson-orin.toml)")
    parent.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", dest="overrides", default=default,
                        help="override one setting (repeatable), e.g. --set tts.backend=piper")
    parent.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS if suppress else False,
                        help="debug logging")
    return parent


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; ``command`` names the optional subcommand whose module should be imported."""
    parser = argparse.ArgumentParser(prog="s2s", description="Offline voice assistant: VAD -> STT -> LLM -> TTS.",
                                     parents=[_global_options(suppress=False)])
    parser.add_argument("--version", action="version", version=f"s2s-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [_global_options(suppress=True)]

    run = sub.add_parser("run", parents=common, help="run the assistant (microphone and speaker by default)")
    run.add_argument("--input", metavar="PATH", help="a WAV file, or a folder of WAVs (one turn each, by name)")
    run.add_argument("--text", metavar="TEXT", help="a typed prompt instead of speech (skips VAD and STT)")
    run.add_argument("--output", metavar="WAV", help="write all reply audio to this WAV instead of the speaker")

    say = sub.add_parser("say", parents=common, help="speak a text into a WAV (TTS alone)")
    say.add_argument("text", help="what to say")
    say.add_argument("-o", "--output", required=True, metavar="WAV", help="the WAV to write")

    sub.add_parser("check", parents=common, help="show versions, CUDA, audio devices, models and Jetson patches")

    for name, (module_name, help_text) in OPTIONAL_COMMANDS.items():
        if name == command:
            module = importlib.import_module(module_name)
            module.add_parser(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _optional_command(argv: list[str]) -> str | None:
    return next((arg for arg in argv if arg in OPTIONAL_COMMANDS), None)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = _optional_command(argv)
    try:
        parser = build_parser(command)
    except ImportError as exc:
        print(f"s2s {command} is not available: {exc}; run ./setup.sh to install what it needs", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        config = load_config(args.config or [], args.overrides or [])
        if args.command == "check":
            return check(config)  # reports the patches, a refusal included
        patches.apply()  # the program's entry: before any stage imports its libraries
        if args.command == "run":
            return run(config, args)
        if args.command == "say":
            return say(config, args.text, args.output)
        return importlib.import_module(OPTIONAL_COMMANDS[args.command][0]).main(args)
    except (ValueError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except patches.NumpyABIError as exc:  # patches.apply() refuses to start; the message says the fix
        print(f"error: {exc}", file=sys.stderr)
        return 1


# ---- s2s say ---------------------------------------------------------------------------------------------------
def say(config: Config, text: str, output: str) -> int:
    """TTS alone: synthesize ``text`` with the configured backend and write a WAV at the engine's rate."""
    import numpy as np

    from s2s.audio import write_wav
    from s2s.tts_engine import make_engine

    if not text.strip():
        raise UsageError('the text is empty; give the words to say, e.g. s2s say "Hello there" -o hello.wav')
    try:
        engine = make_engine(config.tts)
    except (FileNotFoundError, ImportError, RuntimeError) as exc:
        print(f"error: the TTS could not start: {exc}\n(run `s2s check` to see which models are found)",
              file=sys.stderr)
        return 1
    audio = np.concatenate([np.zeros(0, dtype=np.float32), *engine.synthesize(text)])  # [n]
    write_wav(output, audio, engine.sample_rate)
    print(f"{output}: {len(audio) / engine.sample_rate:.1f} s of speech ({engine.name}, {engine.sample_rate} Hz)")
    return 0


# ---- s2s check -------------------------------------------------------------------------------------------------
CHECKED_PACKAGES = ("torch", "numpy", "transformers", "accelerate", "faster-whisper", "ctranslate2", "silero-vad",
                    "onnxruntime", "piper-tts", "qwen-tts", "sounddevice", "soundfile", "scipy", "livekit")


def check(config: Config) -> int:
    """Print what is installed, CUDA, audio devices, models and patches. 1 if a stage has no model or the
    numpy-abi patch refuses this numpy."""
    from s2s.audio_devices import AudioDeviceError, import_sounddevice, list_devices
    from s2s.models import MISSING, describe_models

    registry.check_backends(config)  # an unknown backend is a configuration error (exit status 2), as for `s2s run`

    print(f"s2s-edge {__version__}, Python {platform.python_version()} on {platform.machine()}")
    print("\npackages:")
    for package in CHECKED_PACKAGES:
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = "not installed"
        print(f"  {package:16} {version}")

    print("\ntransformers stack:")
    print(f"  {reference_env.describe()}")

    print("\nCUDA:")
    print(f"  {_cuda_summary()}")

    print("\naudio devices:")
    try:
        print(f"  {import_sounddevice().get_portaudio_version()[1]}")
    except AudioDeviceError as exc:
        print(f"  {exc}")
    devices = list_devices()
    for device in devices:
        io = f"in {device['max_input_channels']}, out {device['max_output_channels']}"
        print(f"  {device['index']:3} {device['name']} ({io}, {device['default_samplerate']:.0f} Hz)")
    if not devices:
        print("  none: use --input/--text and --output")

    print("\nbackends (name: package):")
    for kind in registry.KINDS:
        found = [b for b in registry.backends() if b.kind == kind]
        listed = ", ".join(f"{b.name}: {b.package}" for b in found) or "none installed"
        print(f"  {kind:9} {listed}")

    print("\nmodels:")
    rows = describe_models(config)
    for stage, what, status in rows:
        print(f"  {stage:4} {status:9} {what}")

    print("\nJetson patches:")
    try:
        statuses = patches.apply()
    except patches.NumpyABIError as exc:
        print(f"  {'numpy-abi':18} refused: {exc}")
        return 1
    for status in statuses:
        print(f"  {status.name:18} {'applied' if status.applied else 'not needed'}: {status.detail}")

    from s2s.aec import check_canceller  # numpy and scipy: only once the numpy check has passed

    print("\necho cancellation (full duplex):")
    aec_loads, aec_line = check_canceller(config.aec)
    print(f"  {aec_line}")
    full = config.pipeline.duplex == "full"
    print(f"  duplex = {config.pipeline.duplex!r}" + ("" if aec_loads or not full else
                                                    ': `s2s run` will refuse to start; set duplex = "half"'))

    print(f"\nbatched speech serving (server.max_batch = {config.server.max_batch}): row slots, bf16")
    for line in _batch_memory(config.tts.max_seq_len):
        print(f"  {line}")

    return 1 if any(status == MISSING for _, _, status in rows) or (full and not aec_loads) else 0


def _batch_memory(max_seq_len: int) -> list[str]:
    """Memory of the batched decoder's row slots for the released 0.6B and 1.7B shapes (s2s.qwen3_tts.batch_memory);
    weights, codec decoders and the single-stream engine come on top (README: Serving many clients)."""
    try:
        from s2s.checkpoint_builder.build import main_config
    except ImportError as exc:
        return [f"not computed: {exc}"]
    from s2s.qwen3_tts.batch_memory import table

    shapes = {}
    for size in ("0.6b", "1.7b"):
        talker = main_config(size, "custom_voice")["talker_config"]
        shapes[size] = (talker, talker["code_predictor_config"])
    return table(shapes, max_seq_len)


def _cuda_summary() -> str:
    try:
        import torch
    except ImportError as exc:
        return f"torch is not importable ({exc})"
    if not torch.cuda.is_available():
        return f"not available (torch {torch.__version__}, built for CUDA {torch.version.cuda})"
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return f"CUDA {torch.version.cuda}: {names}"


def console() -> None:
    """The ``s2s`` console script: ``main()``, then exit without waiting for a stage thread that is still inside
    a native call (a hung stage): waiting for it at interpreter shutdown could abort the process."""
    code = main()
    if any(thread.name.startswith("s2s-") and thread.is_alive() for thread in threading.enumerate()):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console()
