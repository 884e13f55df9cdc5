"""The whole turn, measured: end of speech -> first audio out on the real pipeline, fed in real time (issue 10).

Usage (repo root):
    python bench/e2e.py --config cpu --out OUT            # this machine: the embedded models, configs/cpu.toml
    python bench/e2e.py --config gpu --out OUT --whisper DIR --ckpts /tmp/ckpts   # the GPU machine: bench/e2e_gpu.sh
    python bench/e2e.py --cutoffs-only --out OUT          # only the premature cut-offs against vad.min_silence_ms

The questions: ``QUESTIONS``, spoken by espeak-ng in several voices and speeds (three with a pause in the middle),
written once as 16 kHz WAVs into ``--questions`` (default build/e2e-questions; a machine without espeak-ng, such as
the GPU machine, reads the ones made here). The pipeline is ``Pipeline.from_config`` on that folder with
``audio_in.realtime_file = true`` (each file at real-time speed, then 1 s of silence; the next file after the reply,
half duplex) and the replies to a WAV. Per turn: the latency record's marks (ms from the end of speech, the last
voiced frame's capture), ``speech_end_decided`` (the VAD's decision, after ``vad.min_silence_ms``), what the STT
heard, whether the speculative transcript was used, and each reply audio chunk's arrival against its play deadline
(chunk k is due when the chunks before it have played, counted from the first one's arrival). Reported: p50/p90
of every mark and stage, end of speech -> first audio out with and without the silence wait, the chunks that came
late, the load average during the run. ``--cutoffs`` (or ``--cutoffs-only``) also runs the VAD alone over the
questions, and over pause variants of two-part questions, for several ``min_silence_ms``: a question cut in two
is a premature cut-off.

Configurations: ``cpu``: configs/cpu.toml (Piper, Whisper tiny.en int8, SmolLM2-135M, all embedded; our static
decode eagerly). ``gpu``: configs/desktop-gpu.toml with a synthetic Qwen3-TTS 0.6B CustomVoice checkpoint
(s2s.checkpoint_builder) and a random-weight Qwen2.5-1.5B-Instruct (bench/chat_llm.py, sampled at temperature 1 so
its text has word breaks as real text does), both built there, the LLM on CUDA graphs, faster-whisper on CUDA if
CTranslate2 can run there, else on the CPU (the result says which and why). Results: OUT/e2e-<config>.json and .md.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import importlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

log = logging.getLogger("bench")

RATE = 16000
TRAILING_S = 1.0
"""Silence the file source feeds after each file (handlers.audio_in.TRAILING_SILENCE_S)."""
QUESTIONS: list[tuple[str, str, int]] = [
    # (text, espeak-ng voice, words per minute); "|300|" = a 300 ms pause between the parts' sounds
    ("What time is it?", "en-us", 160),
    ("What is the capital of France?", "en-gb", 150),
    ("How far away is the moon from the earth?", "en-us+f3", 170),
    ("Tell me a joke.", "en-gb-scotland", 150),
    ("Can you explain how a rainbow forms after the rain?", "en-029", 145),
    ("What is the weather like today in Berlin?", "en-us-nyc", 160),
    ("Good morning!", "en-gb-x-rp", 150),
    ("Why do cats purr when they are happy?", "en-us+m3", 155),
    ("Give me three ideas for a quick and healthy dinner tonight.", "en-gb+f2", 165),
    ("What is two plus two?", "en-us", 140),
    ("Who wrote the novel Pride and Prejudice?", "en-gb-x-rp+f4", 150),
    ("How do I boil an egg so that the yolk stays soft?", "en-us+f1", 160),
    ("Please set a timer for ten minutes.", "en-gb-x-gbclan", 150),
    ("What is the difference between a virus and a bacterium?", "en-us", 175),
    ("Well, I am not sure, but could you tell me how tall the Eiffel Tower is?", "en-gb+m3", 150),
    ("I am planning a trip to Japan in the spring. Which cities should I visit first, and how many days should I "
     "stay in each one?", "en-us", 165),
    ("What's the tallest mountain in the world?", "en-029+f3", 155),
    ("What is the capital of Italy |400| and how many people live there?", "en-us", 155),
    ("Remind me to call my mother |300| tomorrow at noon.", "en-gb", 150),
    ("I was wondering |350| what the best way to learn the piano is.", "en-us+f2", 150),
    ("Spell the word necessary.", "en-gb-scotland+f2", 140),
    ("How many legs does a spider have?", "en-us-nyc", 170),
    ("What should I do if I cannot fall asleep at night?", "en-gb-x-rp", 160),
    ("Turn off the lights in the kitchen, please.", "en-us+m7", 150),
]
PAUSE_VARIANTS_MS = (200, 300, 400, 500, 700)
"""Pauses put into the two-part questions for the cut-off measurement."""
MIN_SILENCE_MS = (500, 400, 300, 250, 200, 150, 100)
MARKS = ("speech_end_decided", "transcript_ready", "llm_first_token", "first_text_chunk", "tts_first_audio",
         "first_audio_out")
STAGES = {  # stage: (from mark, to mark)
    "silence wait (VAD decision)": ("speech_end", "speech_end_decided"),
    "STT after the decision": ("speech_end_decided", "transcript_ready"),
    "LLM first token": ("transcript_ready", "llm_first_token"),
    "first text chunk after first token": ("llm_first_token", "first_text_chunk"),
    "TTS first audio": ("first_text_chunk", "tts_first_audio"),
    "sink": ("tts_first_audio", "first_audio_out"),
    "end of speech -> first audio out, excluding the silence wait": ("speech_end_decided", "first_audio_out"),
    "end of speech -> first audio out, including the silence wait": ("speech_end", "first_audio_out"),
}


# ---- the questions ---------------------------------------------------------------------------------------------
def plain(text: str) -> str:
    """The words of a question, pause marks removed."""
    return " ".join(re.sub(r"\|\d+\|", " ", text).split())


def speak(text: str, voice: str, wpm: int) -> np.ndarray:
    """espeak-ng + sox -> float32 16 kHz mono; "|N|" inserts N ms of silence."""
    import soundfile as sf

    parts = re.split(r"\|(\d+)\|", text)
    audio = []
    with tempfile.TemporaryDirectory(prefix="s2s-e2e-") as tmp:
        for i, part in enumerate(parts):
            if i % 2:
                audio.append(np.zeros(int(part) * RATE // 1000, dtype=np.float32))
                continue
            raw, wav = Path(tmp) / "raw.wav", Path(tmp) / "16k.wav"
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-w", str(raw), part.strip()], check=True,
                           capture_output=True)
            subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(wav)], check=True,
                           capture_output=True)
            samples, rate = sf.read(wav, dtype="float32")
            assert rate == RATE
            audio.append(trimmed(samples))
    return np.concatenate(audio)


def trimmed(samples: np.ndarray, margin_s: float = 0.03) -> np.ndarray:
    """espeak-ng's leading and trailing silence cut to ``margin_s``, so that "|300|" is a 300 ms pause."""
    loud = np.flatnonzero(np.abs(samples) > 0.01 * np.abs(samples).max())  # [k] sample indexes
    margin = int(margin_s * RATE)
    return samples[max(0, loud[0] - margin):loud[-1] + margin]


def question_set(folder: Path) -> list[dict]:
    """The questions as WAVs in ``folder`` (made with espeak-ng if missing); their manifest, in file order."""
    import soundfile as sf

    manifest_path = folder / "manifest.json"
    wanted = [{"file": f"q{i:02d}.wav", "text": text, "voice": voice, "wpm": wpm}
              for i, (text, voice, wpm) in enumerate(QUESTIONS)]
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        if [(q["text"], q["voice"], q["wpm"]) for q in manifest] == [(q["text"], q["voice"], q["wpm"]) for q in wanted]:
            return manifest
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        raise SystemExit(f"{folder} holds no question set and espeak-ng/sox are not installed: make it on a machine "
                         "that has them (python bench/e2e.py --questions-only) and bring the folder along")
    folder.mkdir(parents=True, exist_ok=True)
    for question in wanted:
        audio = speak(question["text"], question["voice"], question["wpm"])
        sf.write(folder / question["file"], audio, RATE, subtype="PCM_16")
        question["seconds"] = round(len(audio) / RATE, 3)
    manifest_path.write_text(json.dumps(wanted, indent=2))
    log.info("wrote %d questions to %s", len(wanted), folder)
    return wanted


# ---- premature cut-offs ----------------------------------------------------------------------------------------
def utterance_count(audio: np.ndarray, model, min_silence_ms: int) -> int:
    """Utterances the VAD finds in ``audio`` followed by the file source's trailing silence."""
    from handlers.vad import FRAME_SAMPLES, UtteranceDetector
    from s2s.config import VADConfig

    detector = UtteranceDetector(VADConfig(min_silence_ms=min_silence_ms, early_stt_ms=0), model)
    padded = np.concatenate([audio, np.zeros(int(TRAILING_S * RATE), dtype=np.float32)])
    found = 0
    for start in range(0, len(padded), FRAME_SAMPLES):
        found += len(detector(padded[start:start + FRAME_SAMPLES], start / RATE, 0.0))
    return found + len(detector.flush())


def measure_cutoffs(folder: Path, manifest: list[dict]) -> dict:
    """Questions the VAD cuts in two (or more) for each min_silence_ms: the set itself, then pause variants."""
    import soundfile as sf

    from handlers.vad import SileroSpeechModel

    model = SileroSpeechModel()
    clips = {q["text"]: sf.read(folder / q["file"], dtype="float32")[0] for q in manifest}
    two_part = [q for q in manifest if "|" in q["text"]]
    variants = {}
    if shutil.which("espeak-ng"):
        for q in two_part:
            first, second = (plain(part) for part in re.split(r"\|\d+\|", q["text"]))
            for pause in PAUSE_VARIANTS_MS:
                variants[(q["text"], pause)] = speak(f"{first} |{pause}| {second}", q["voice"], q["wpm"])
    rows = []
    for ms in MIN_SILENCE_MS:
        cut = [plain(text) for text, audio in clips.items() if utterance_count(audio, model, ms) > 1]
        pauses = collections.defaultdict(int)
        for (_, pause), audio in variants.items():
            pauses[pause] += utterance_count(audio, model, ms) > 1
        rows.append({"min_silence_ms": ms, "questions_cut": len(cut), "questions": len(clips), "cut": cut,
                     "pause_variants_cut": {str(p): pauses[p] for p in PAUSE_VARIANTS_MS},
                     "pause_variants_each": len(two_part) if variants else 0})
        log.info("min_silence_ms %d: %d of %d questions cut; pause variants cut %s", ms, len(cut), len(clips),
                 dict(pauses))
    return {"rows": rows}


def replay(audio: np.ndarray, detector, stt, end_of_turn) -> list[dict]:
    """The VAD over ``audio`` and the file source's trailing silence, in stream time, with every speculative
    transcript made and judged at once (an instant STT and turn model: the earliest an end of turn could be
    decided). Events: "end" (silence), "early" (the words sounded finished), "resumed", with stream times."""
    from handlers.vad import FRAME_SAMPLES, Resumed
    from s2s.messages import SpeculativeSegment

    padded = np.concatenate([audio, np.zeros(int(TRAILING_S * RATE), dtype=np.float32)])
    events = []
    for start in range(0, len(padded), FRAME_SAMPLES):
        now = (start + FRAME_SAMPLES) / RATE
        for item in detector(padded[start:start + FRAME_SAMPLES], start / RATE, 0.0):
            if isinstance(item, SpeculativeSegment):
                if detector.end_of_turn is not None:
                    text, _ = stt.transcribe(item.audio)
                    end_of_turn.judge(item.start_s, item.end_s, text)
            elif isinstance(item, Resumed):
                events.append({"event": "resumed", "at_s": item.start_s})
            else:
                events.append({"event": "early" if detector.sent_early else "end", "at_s": now,
                               "silence_ms": round((now - item.end_s) * 1000), "end_s": item.end_s})
    events += [{"event": "end", "at_s": len(padded) / RATE, "silence_ms": None} for _ in detector.flush()]
    return events


def outcome(events: list[dict]) -> dict:
    """Utterances that stood (an early one followed by "resumed" was taken back), the early ends, and for each
    taken-back one how long after the decision the user spoke on (ms)."""
    stood, early, resumed_after = 0, 0, []
    for k, event in enumerate(events):
        if event["event"] == "resumed":
            continue
        early += event["event"] == "early"
        taken_back = k + 1 < len(events) and events[k + 1]["event"] == "resumed"
        if taken_back:
            resumed_after.append(round((events[k + 1]["at_s"] - event["at_s"]) * 1000))
        else:
            stood += 1
    return {"utterances": stood, "early": early, "resumed_after_ms": resumed_after,
            "silence_ms": [e["silence_ms"] for e in events if e["event"] in ("early", "end")]}


def measure_turn_cutoffs(folder: Path, manifest: list[dict], args) -> dict:
    """End of turn from the words (configs/cpu.toml's Whisper, the embedded SmolLM2 as the turn model) against
    silence alone: how soon each question ends, and what becomes of the two-part questions' pauses."""
    import soundfile as sf

    from handlers.stt import STTHandler
    from handlers.vad import SileroSpeechModel, UtteranceDetector
    from s2s.config import EndOfTurnConfig, STTConfig, VADConfig
    from s2s.end_of_turn import EndOfTurn
    from s2s.handler import Wiring
    from s2s.turns import Turns

    vad = VADConfig(min_silence_ms=args.min_silence_ms or 500, early_stt_ms=args.early_stt_ms or 96)
    eot = EndOfTurnConfig(silence_ms=args.end_of_turn_ms or 128, device="cpu")
    model = SileroSpeechModel()
    stt = STTHandler(Wiring(Turns()), STTConfig(device="cpu"))
    stt.setup()
    end_of_turn = EndOfTurn(eot)
    end_of_turn.setup()
    clips = {q["text"]: sf.read(folder / q["file"], dtype="float32")[0] for q in manifest}
    variants = {}
    if shutil.which("espeak-ng"):
        for q in (q for q in manifest if "|" in q["text"]):
            first, second = (plain(part) for part in re.split(r"\|\d+\|", q["text"]))
            for pause in PAUSE_VARIANTS_MS:
                variants[f"{first} |{pause}| {second}"] = speak(f"{first} |{pause}| {second}", q["voice"], q["wpm"])
    rows = []
    for variant, (text, audio) in [*((False, c) for c in clips.items()), *((True, v) for v in variants.items())]:
        done = {}
        for name, turn_model in (("silence", None), ("words", end_of_turn)):
            detector = UtteranceDetector(vad, model, turn_model)
            done[name] = outcome(replay(audio, detector, stt, end_of_turn))
        pause = re.search(r"\|(\d+)\|", text)
        rows.append({"text": plain(text), "pause_ms": int(pause.group(1)) if pause else None,
                     "variant": variant, **done})
        log.info("%s: %s", text, done["words"])
    return {"vad": dataclasses.asdict(vad), "end_of_turn": dataclasses.asdict(eot), "rows": rows,
            "verdicts": dict(end_of_turn.counts)}


# ---- the pipeline ----------------------------------------------------------------------------------------------
def ensure_backends() -> None:
    """Make the repo's backends findable when s2s-edge is on PYTHONPATH but not installed (the GPU machine): a
    dist-info with the entry points of pyproject.toml, in a temporary folder on sys.path."""
    from s2s import registry

    if registry.names("vad"):
        return
    toml = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")  # tomli on JetPack 6
    groups = toml.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]
    site = Path(tempfile.mkdtemp(prefix="s2s-entry-points-"))
    info = site / "s2s_edge-0.0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: s2s-edge\nVersion: 0.0.0\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in entries.items()) + "\n"
        for group, entries in groups.items()))
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    log.info("s2s-edge is not installed: its entry points registered from pyproject.toml")


class LoadSampler(threading.Thread):
    """The 1-minute load average every 2 s while the run lasts."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(2.0):
            self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict:
        values = self.samples or [os.getloadavg()[0]]
        return {"mean": round(sum(values) / len(values), 2), "max": round(max(values), 2), "samples": len(values)}


class TurnLog(logging.Handler):
    """What the stages log per turn: the VAD's utterance times, the STT's words, the LLM's reply."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.utterance: dict[int, tuple[float, float]] = {}
        self.heard: dict[int, str] = {}
        self.reply: dict[int, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        msg, args = record.msg, record.args
        if not isinstance(msg, str) or not isinstance(args, tuple):
            return
        if msg.startswith("VAD: utterance") and len(args) == 3:
            self.utterance[args[2]] = (args[0], args[1])
        elif msg.startswith("STT: turn %d: %r"):
            self.heard[args[0]] = args[1]
        elif msg.startswith("LLM: turn %d: %r"):
            self.reply[args[0]] = args[1]


def record_arrivals(sink) -> dict[int, list[tuple[float, float]]]:
    """Wrap the sink's ``write``: turn -> [(monotonic arrival, seconds of audio)] per block handed to it."""
    arrivals: dict[int, list[tuple[float, float]]] = collections.defaultdict(list)
    write = sink.write

    def timed_write(turn_id: int, samples: np.ndarray) -> None:
        arrivals[turn_id].append((time.monotonic(), len(samples) / sink.rate))
        write(turn_id, samples)

    sink.write = timed_write
    return arrivals


def gaps(chunks: list[tuple[float, float]]) -> dict:
    """Each chunk's arrival against its play deadline (playback starts at the first chunk's arrival)."""
    if not chunks:
        return {"chunks": 0, "late": 0, "worst_late_ms": None, "min_slack_ms": None}
    t0, played, lateness = chunks[0][0], 0.0, []
    for arrival, seconds in chunks:
        lateness.append((arrival - (t0 + played)) * 1000)
        played += seconds
    later = lateness[1:] or [-float("inf")]
    return {"chunks": len(chunks), "late": sum(late > 0 for late in later),
            "worst_late_ms": round(max(later), 1) if len(chunks) > 1 else None,
            "min_slack_ms": round(-max(later), 1) if len(chunks) > 1 else None, "audio_s": round(played, 2)}


def question_of(span: tuple[float, float] | None, manifest: list[dict]) -> int | None:
    """The question whose stretch of the input stream holds the utterance's end of speech."""
    if span is None:
        return None
    position = 0.0
    for i, question in enumerate(manifest):
        length = question.get("seconds", 0.0) + TRAILING_S
        if position <= span[1] < position + length:
            return i
        position += length
    return None


def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z']+", text.lower()) if len(w) >= 3}


def pipeline_config(args, notes: dict):
    from s2s.config import load_config

    given = {"vad.min_silence_ms": args.min_silence_ms, "vad.early_stt_ms": args.early_stt_ms,
             "end_of_turn.silence_ms": args.end_of_turn_ms, "end_of_turn.model": args.turn_model}
    overrides = ["audio_in.realtime_file=true", *(f"{k}={v}" for k, v in given.items() if v is not None), *args.set]
    if args.config == "cpu":
        return load_config([REPO / "configs" / "cpu.toml"], overrides)
    import torch
    from build_checkpoints import checkpoint_dir
    from chat_llm import save_chat_model

    import patches

    patches.apply()
    from s2s.checkpoint_builder.build import build_checkpoint

    size, arch = ("tiny", "tiny") if args.tiny else ("0.6b", "qwen2.5-1.5b")
    tts = checkpoint_dir(args.ckpts, size)
    start = time.monotonic()
    build_checkpoint(tts, size=size, kind="custom_voice", seed=0)
    llm = save_chat_model(args.ckpts / f"{arch}-chat", arch, torch.float32 if args.tiny else torch.bfloat16,
                          device="cpu" if args.tiny else "cuda")
    notes["build_s"] = round(time.monotonic() - start, 1)
    device, compute_type, why = whisper_device(args.whisper)
    notes["stt_device"] = device
    notes["stt_device_why"] = why
    on_cpu = ["tts.device=cpu", "tts.dtype=float32", "llm.device=cpu", "llm.dtype=float32"] if args.tiny else []
    return load_config([REPO / "configs" / "desktop-gpu.toml"], [
        f"tts.model={tts}", "tts.max_new_tokens=40", f"llm.model={llm}", "llm.temperature=1.0",
        "llm.max_new_tokens=48", f"stt.model={args.whisper}", f"stt.device={device}", "pipeline.hang_timeout_s=10",
        f"stt.compute_type={compute_type}", *on_cpu, *overrides])


def whisper_device(model_dir: Path) -> tuple[str, str, str]:
    """("cuda", "float16", "") when CTranslate2 transcribes on the GPU here, else ("cpu", "int8", why not)."""
    try:
        import av  # noqa: F401  (faster-whisper imports it; it only decodes files)
    except ImportError:
        sys.modules["av"] = types.ModuleType("av")  # the stages hand it arrays; PyAV (36 MB) does not travel
        log.info("PyAV is not installed: faster-whisper gets an empty stand-in (it decodes no file here)")
    import ctranslate2
    from faster_whisper import WhisperModel

    count = ctranslate2.get_cuda_device_count()
    if count == 0:
        return "cpu", "int8", "CTranslate2 sees no CUDA device"
    try:
        segments, _ = WhisperModel(str(model_dir), device="cuda", compute_type="float16").transcribe(
            np.zeros(RATE, dtype=np.float32), beam_size=1, vad_filter=False)
        list(segments)
    except Exception as exc:  # e.g. a CTranslate2 wheel built for another CUDA major version
        return "cpu", "int8", f"CTranslate2 sees {count} CUDA device(s) but cannot run there: {exc}"
    return "cuda", "float16", ""


def run_pipeline(args, manifest: list[dict], notes: dict) -> dict:
    from s2s.pipeline import Pipeline
    from s2s.supervisor import Watchdog

    ensure_backends()
    config = pipeline_config(args, notes)
    turn_log = TurnLog()
    for name in ("handlers.vad", "handlers.stt", "handlers.llm"):
        logging.getLogger(name).addHandler(turn_log)
    replies = args.replies or args.out / f"replies-{args.config}.wav"
    pipeline = Pipeline.from_config(config, input_path=args.questions, output_path=replies)
    stages = {stage.name: stage for stage in pipeline.stages}
    arrivals = record_arrivals(pipeline.sink)
    start = time.monotonic()
    pipeline.setup()
    notes["setup_s"] = round(time.monotonic() - start, 1)
    notes["llm_decode"] = "static, " + ("CUDA graphs" if getattr(stages["llm"].chat_model.decoder, "use_graphs", False)
                                         else "eager") if stages["llm"].chat_model.decoder else "transformers loop"
    sampler = LoadSampler()
    notes["load_before"] = round(os.getloadavg()[0], 2)
    sampler.start()
    start = time.monotonic()
    pipeline.start()
    watchdog = Watchdog(pipeline, 2.0, pipeline.stop_event)  # a stage that hangs: its stack goes into the log
    watchdog.start()
    try:
        finished = pipeline.wait(args.timeout)
    finally:
        watchdog.stop()
        pipeline.stop()
        sampler.done.set()
    notes["run_s"] = round(time.monotonic() - start, 1)
    notes["finished"] = finished
    notes["load_average_1min"] = sampler.summary()
    notes["speculative_transcripts"] = dict(getattr(stages["stt"], "speculative_counts", {}))
    end_of_turn = stages["vad"].wiring.end_of_turn
    notes["end_of_turn"] = dict(end_of_turn.counts) if end_of_turn is not None else None
    notes["speculative_stt_ms"] = {"p50": pctl(getattr(stages["stt"], "speculative_ms", []), 0.5),
                                   "p90": pctl(getattr(stages["stt"], "speculative_ms", []), 0.9)}
    notes["end_of_turn_judge_ms"] = ({"p50": pctl(end_of_turn.judge_ms, 0.5), "p90": pctl(end_of_turn.judge_ms, 0.9)}
                                     if end_of_turn is not None else None)
    notes["vad"] = dataclasses.asdict(config.vad)
    notes["end_of_turn_config"] = dataclasses.asdict(config.end_of_turn)
    turns = []
    for record in pipeline.turns.records:
        turn = record["turn"]
        index = question_of(turn_log.utterance.get(turn), manifest)
        question = plain(manifest[index]["text"]) if index is not None else None
        heard = turn_log.heard.get(turn, "")
        turns.append({**record, "question": index, "asked": question, "heard": heard,
                      "word_recall": round(len(words(question) & words(heard)) / max(1, len(words(question))), 2)
                      if question else None,
                      "reply": turn_log.reply.get(turn), "gaps": gaps(arrivals.get(turn, []))})
    return {"turns": turns}


# ---- the report ------------------------------------------------------------------------------------------------
def pctl(values: list[float], q: float) -> float | None:
    ordered = sorted(v for v in values if v is not None)
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)


def summarize(turns: list[dict]) -> dict:
    good = [t for t in turns if t["error"] is None and t.get("first_audio_out_ms") is not None
            and not t.get("retracted")]
    marks = {"speech_end": lambda t: 0.0, **{m: (lambda t, m=m: t.get(f"{m}_ms")) for m in MARKS}}
    table = {}
    for name, (a, b) in STAGES.items():
        values = [marks[b](t) - marks[a](t) for t in good if marks[a](t) is not None and marks[b](t) is not None]
        table[name] = {"p50": pctl(values, 0.5), "p90": pctl(values, 0.9), "n": len(values)}
    for mark in MARKS:
        values = [t.get(f"{mark}_ms") for t in good]
        table[f"{mark} (from the end of speech)"] = {"p50": pctl(values, 0.5), "p90": pctl(values, 0.9),
                                                     "n": len(values)}
    chunk_gaps = [t["gaps"] for t in good]
    return {"stages": table, "turns": len(turns), "turns_with_audio": len(good),
            "failed": sum(t["error"] is not None for t in turns),
            "retracted": sum(bool(t.get("retracted")) for t in turns),
            "chunks": sum(g["chunks"] for g in chunk_gaps), "late_chunks": sum(g["late"] for g in chunk_gaps),
            "worst_late_ms": max((g["worst_late_ms"] for g in chunk_gaps if g["worst_late_ms"] is not None),
                                 default=None),
            "min_slack_ms": min((g["min_slack_ms"] for g in chunk_gaps if g["min_slack_ms"] is not None),
                                default=None),
            "mean_word_recall": round(sum(t["word_recall"] or 0 for t in turns) / max(1, len(turns)), 2)}


def environment(config: str) -> dict:
    import torch
    import transformers

    info = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "cores": os.cpu_count(), "cpu": platform.processor()}
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        info["cpu"] = names[0] if names else info["cpu"]
    except OSError:
        pass
    if config == "gpu" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import ctranslate2

        info["ctranslate2"] = ctranslate2.__version__
    except ImportError:
        pass
    return info


def markdown(result: dict) -> str:
    env, notes = result["environment"], result.get("notes", {})
    lines = [f"# End of speech -> first audio out, {result['config']} ({env['date']})", ""]
    where = env.get("gpu") or f"{env['cpu']}, {env['cores']} cores"
    lines.append(f"{where}; Python {env['python']}, torch {env['torch']}, transformers {env['transformers']}"
                 f"{', CTranslate2 ' + env['ctranslate2'] if 'ctranslate2' in env else ''}. `python bench/e2e.py "
                 f"{result['command']}`.")
    lines.append("")
    if "summary" in result:
        s = result["summary"]
        load = notes.get("load_average_1min", {})
        lines += [
            f"{len(result['questions'])} espeak-ng questions ({result['question_seconds']:.0f} s of speech, "
            f"{result['voices']} voices, {result['paused']} with a 300-400 ms pause inside) fed in real time; "
            f"vad.min_silence_ms = {notes['vad']['min_silence_ms']}, vad.early_stt_ms = "
            f"{notes['vad']['early_stt_ms']}, end_of_turn.silence_ms = {notes['end_of_turn_config']['silence_ms']} "
            f"(threshold {notes['end_of_turn_config']['threshold']}; verdicts: {notes['end_of_turn']}); "
            f"{s['turns']} turns, {s['turns_with_audio']} with reply audio, {s['failed']} failed, "
            f"{s['retracted']} taken back (the user spoke on). Models: {result['models']}. STT on {notes.get('stt_device', 'cpu')}"
            f"{' (' + notes['stt_device_why'] + ')' if notes.get('stt_device_why') else ''}; LLM decode: "
            f"{notes.get('llm_decode')}. Speculative transcripts: {notes.get('speculative_transcripts')} (each took "
            f"{notes.get('speculative_stt_ms')} ms; the end-of-turn rating {notes.get('end_of_turn_judge_ms')} ms). "
            f"Mean word recall of the STT: {s['mean_word_recall']}.",
            "",
            f"**Load average (1 min) during the run: mean {load.get('mean')}, max {load.get('max')}** "
            f"(before: {notes.get('load_before')}; {env['cores']} cores). Anything above about 1 means other "
            f"processes shared the cores, and the times below are inflated by it.",
            "",
            "| ms | p50 | p90 | n |",
            "|---|---|---|---|",
        ]
        for name, row in s["stages"].items():
            bold = "**" if name.startswith("end of speech") else ""
            lines.append(f"| {bold}{name}{bold} | {bold}{row['p50']}{bold} | {row['p90']} | {row['n']} |")
        slack = s["min_slack_ms"]
        tightest = ("no chunk followed another" if slack is None else
                    f"the tightest came {slack} ms before its deadline" if slack >= 0 else
                    f"the latest came {-slack} ms after its deadline")
        lines += ["", f"Reply audio chunks: {s['chunks']}, late for their play deadline: {s['late_chunks']} "
                  f"({tightest}). A chunk is due when the chunks before it have played, counted from the first "
                  "one's arrival at the sink.", ""]
        lines += ["| turn | question | heard | decided | transcript | first token | first chunk | TTS audio | "
                  "audio out | chunks late |", "|---|---|---|---|---|---|---|---|---|---|"]
        for t in result["run"]["turns"]:
            lines.append(f"| {t['turn']}{' (taken back)' if t.get('retracted') else ''} | {t['asked']} | {t['heard']} | {t.get('speech_end_decided_ms')} | "
                         f"{t.get('transcript_ready_ms')} | {t.get('llm_first_token_ms')} | "
                         f"{t.get('first_text_chunk_ms')} | {t.get('tts_first_audio_ms')} | "
                         f"{t.get('first_audio_out_ms')} | {t['gaps']['late']}/{t['gaps']['chunks']} |")
        lines.append("")
    if "cutoffs" in result:
        lines += ["## Premature cut-offs against vad.min_silence_ms", "",
                  "The VAD alone (Silero, speech_pad_ms 300, min_speech_ms 250) over each question followed by 1 s of "
                  "silence: a question found as more than one utterance is cut off early (its first part would be "
                  "answered alone). Pause variants: the three two-part questions with a pause of the given length "
                  "between the parts.", "",
                  "| min_silence_ms | questions cut | " + " | ".join(f"{p} ms pause cut" for p in PAUSE_VARIANTS_MS)
                  + " |", "|---|---|" + "---|" * len(PAUSE_VARIANTS_MS)]
        for row in result["cutoffs"]["rows"]:
            each = row["pause_variants_each"]
            lines.append(f"| {row['min_silence_ms']} | {row['questions_cut']} of {row['questions']} | "
                         + " | ".join(f"{row['pause_variants_cut'][str(p)]} of {each}" for p in PAUSE_VARIANTS_MS)
                         + " |")
        lines.append("")
    if "turn_cutoffs" in result:
        lines += turn_cutoff_lines(result["turn_cutoffs"])
    return "\n".join(lines)


def turn_cutoff_lines(found: dict) -> list[str]:
    vad, eot = found["vad"], found["end_of_turn"]
    rows = found["rows"]
    asked = [r for r in rows if not r["variant"]]
    lines = ["## End of turn from the words against silence alone", "",
             f"Each question (and the pause variants of the two-part ones) through the VAD (min_silence_ms "
             f"{vad['min_silence_ms']}, early_stt_ms {vad['early_stt_ms']}) with every speculative transcript made "
             f"(Whisper tiny.en) and rated (SmolLM2-135M-Instruct, threshold {eot['threshold']}) at once, in stream "
             f"time: the earliest the words could end a turn (end_of_turn.silence_ms {eot['silence_ms']}); on a "
             f"machine the STT and the rating add their time. Verdicts: {found['verdicts']}.", ""]
    for name in ("silence", "words"):
        silences = [r[name]["silence_ms"][-1] for r in asked if r[name]["silence_ms"]]
        early = sum(r[name]["early"] > 0 for r in asked)
        cut = sum(r[name]["utterances"] > 1 for r in asked)
        lines.append(f"- {name}: the last utterance of each question ended after p50 {pctl(silences, 0.5)} ms / "
                     f"p90 {pctl(silences, 0.9)} ms of silence; {early} of {len(asked)} ended early, {cut} cut "
                     f"in two.")
    lines += ["", "| pause variant | silence: utterances | words: utterances | words: early ends | spoke on after "
              "the early end (ms) |", "|---|---|---|---|---|"]
    for r in rows:
        if r["variant"] or r["pause_ms"]:
            lines.append(f"| {r['text']} ({r['pause_ms']} ms) | {r['silence']['utterances']} | "
                         f"{r['words']['utterances']} | {r['words']['early']} | "
                         f"{', '.join(map(str, r['words']['resumed_after_ms'])) or '-'} |")
    lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--questions", type=Path, default=REPO / "build" / "e2e-questions")
    parser.add_argument("--questions-only", action="store_true", help="write the question WAVs and stop")
    parser.add_argument("--cutoffs", action="store_true", help="also measure premature cut-offs")
    parser.add_argument("--cutoffs-only", action="store_true", help="only measure premature cut-offs")
    parser.add_argument("--turn-cutoffs", action="store_true",
                        help="also measure end of turn from the words against silence alone (VAD, STT, turn model)")
    parser.add_argument("--min-silence-ms", type=int, help="vad.min_silence_ms (default: the config's)")
    parser.add_argument("--early-stt-ms", type=int, help="vad.early_stt_ms (default: the config's)")
    parser.add_argument("--end-of-turn-ms", type=int, help="end_of_turn.silence_ms (default: the config's)")
    parser.add_argument("--turn-model", help="end_of_turn.model (default: the config's)")
    parser.add_argument("--whisper", type=Path, help="gpu: the Whisper CTranslate2 folder (default: the embedded one)")
    parser.add_argument("--ckpts", type=Path, default=Path("/tmp/ckpts"), help="gpu: where to build the models")
    parser.add_argument("--replies", type=Path, help="the reply WAV (default OUT/replies-<config>.wav)")
    parser.add_argument("--first", type=int, default=0, help="only the first N questions (a smoke run)")
    parser.add_argument("--tiny", action="store_true", help="gpu: tiny models on the CPU (a smoke run of that path)")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--set", action="append", default=[], help="section.key=value, applied last")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = question_set(args.questions)
    if args.questions_only:
        return
    if args.first:  # a short run: the first N questions, copied into OUT
        subset = args.out / "questions"
        shutil.rmtree(subset, ignore_errors=True)
        subset.mkdir()
        manifest = manifest[:args.first]
        for question in manifest:
            shutil.copy(args.questions / question["file"], subset / question["file"])
        args.questions = subset
    if args.whisper is None:
        from s2s.models import embedded_whisper

        args.whisper = embedded_whisper()
    result = {"config": args.config, "command": " ".join(sys.argv[1:]), "environment": environment(args.config),
              "questions": [plain(q["text"]) for q in manifest],
              "voices": len({q["voice"] for q in manifest}), "paused": sum("|" in q["text"] for q in manifest),
              "question_seconds": sum(q.get("seconds", 0.0) for q in manifest),
              "min_silence_ms": args.min_silence_ms, "early_stt_ms": args.early_stt_ms,
              "models": ("Piper joe (embedded), Whisper tiny.en int8 (embedded), SmolLM2-135M-Instruct (embedded "
                         "GGUF, fp32)" if args.config == "cpu" else
                         "tiny synthetic Qwen3-TTS and a tiny random Qwen2 on the CPU (a smoke run)" if args.tiny else
                         "Qwen3-TTS 0.6B CustomVoice (synthetic, bf16, our engine), Whisper tiny.en, random "
                         "Qwen2.5-1.5B-Instruct (bf16, sampled at temperature 1)")}
    if args.cutoffs or args.cutoffs_only:
        result["cutoffs"] = measure_cutoffs(args.questions, manifest)
    if args.turn_cutoffs:
        result["turn_cutoffs"] = measure_turn_cutoffs(args.questions, manifest, args)
    if not args.cutoffs_only:
        notes: dict = {}
        result["notes"] = notes
        result["run"] = run_pipeline(args, manifest, notes)
        result["summary"] = summarize(result["run"]["turns"])
    name = f"e2e-{args.config}" if not args.cutoffs_only else "e2e-cutoffs"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2))
    (args.out / f"{name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
