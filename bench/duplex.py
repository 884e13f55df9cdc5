"""Full duplex on the CPU (issue 11): the echo canceller alone, then the whole pipeline in the simulated room.

    .venv/bin/python bench/duplex.py --out bench/results/2026-12-02-duplex-cpu    # writes OUT.md and OUT.json
    .venv/bin/python bench/duplex.py --trials 2 --replies 4 --out /tmp/quick      # a quick look

Part 1, the canceller alone (tests/simulated_room.py, no pipeline, as fast as the CPU goes): ERLE after the first
2 s (echo power in the microphone over residual power after the canceller, where the echo is audible) on several
rooms and devices, and the canceller's CPU time per second of audio (``EchoCancellation`` with the WebRTC backend,
process CPU time, i.e. its worker threads included).

Part 2, the pipeline (Silero, Whisper tiny.en, SmolLM2-135M, Piper; real threads; the room in real time):

* interruptions: a long reply, and 1-3 s into it a spoken question (espeak-ng at half scale) in a normal room
  (the echo 6 dB under the user) and in a loud one (the echo as loud as the user, a mildly distorting speaker);
  per trial the onset-to-stop time in the room's clock (from the first audible sample of the question to the
  moment the speaker went quiet for good), the latency record's marks, whether it was missed (the reply played on),
  and the STT's word recall of the question;
* echo only: replies back to back in the loud room (at twice real time): any interruption is a false one, as is
  any turn made from the echo; pauses (the reply held while the detector decides) are counted apart;
* backchannels: a 150 ms "mm" 1-2 s into a reply: an interruption is a false one (a pause is expected).

The false-interruption rate is false interruptions per reply (echo-only and backchannel replies); the
missed-interruption rate is missed questions per question. The load average during the run is recorded: the
numbers of part 2 depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import re
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

import conftest  # noqa: E402, F401  (offline hubs, the Jetson patches)
from cpu_workload import machine  # noqa: E402
from duplex_session import LOUD_ROOM, NORMAL_ROOM, USER_LEVEL, Duplex, speaker_stop_after, wait  # noqa: E402
from fixtures_models import _convert_smollm2, speak  # noqa: E402
from pipeline_helpers import integration_config, words  # noqa: E402
from simulated_room import EchoPath, SimulatedRoom, cancel_in_room, erle_db  # noqa: E402
from test_barge_in import hum  # noqa: E402

from s2s.aec import make_canceller  # noqa: E402
from s2s.audio import resample  # noqa: E402
from s2s.config import AECConfig  # noqa: E402

log = logging.getLogger("bench.duplex")

QUESTIONS = [
    "Please tell me the weather in Berlin.",
    "Wait. What time is it in London?",
    "What is the capital of France?",
    "Can you tell me how to boil an egg?",
    "Stop. Tell me a joke instead.",
    "Why is the sky blue?",
    "How far away is the moon?",
    "Tell me about the weather in Paris instead.",
]
"""Questions that interrupt (spoken by espeak-ng); one per trial, in turn."""
TOPICS = ["a brave knight and a dragon", "a lost robot", "a sailor and a storm", "a clever fox", "a small village",
          "a journey to the mountains", "a wizard's apprentice", "a race in the desert"]
FAR_TEXT = ("The capital of France is Paris. It is a large city with many museums, parks and old buildings. "
            "Tomorrow the weather will be sunny with a light wind from the west and warm afternoon temperatures.")
CANCELLER_CASES = [
    ("issue room: 60 ms, RT60 200 ms, gain 0.7", dict(path=EchoPath(0.06, 0.2, 0.7))),
    ("same, AEC3 alone (no noise suppression)", dict(path=EchoPath(0.06, 0.2, 0.7), noise_suppression=False)),
    ("120 ms, RT60 300 ms, gain 1.0, distorting speaker", dict(path=EchoPath(0.12, 0.3, 1.0, nonlinearity=1.0))),
    ("20 ms, RT60 100 ms, gain 0.3", dict(path=EchoPath(0.02, 0.1, 0.3))),
    ("issue room, microphone at 44.1 kHz", dict(path=EchoPath(0.06, 0.2, 0.7), mic_rate=44100)),
    ("issue room, microphone at 48 kHz", dict(path=EchoPath(0.06, 0.2, 0.7), mic_rate=48000)),
    ("issue room, speaker clock +100 ppm", dict(path=EchoPath(0.06, 0.2, 0.7), drift_ppm=100)),
    ("issue room, no output latency reported", dict(path=EchoPath(0.06, 0.2, 0.7), reported_output_latency_s=0.0)),
]


# ---- part 1: the canceller alone -----------------------------------------------------------------------------------
def canceller_alone() -> list[dict]:
    far = resample(0.8 * speak(FAR_TEXT), 16000, 48000)
    far = np.concatenate([far, far])  # 24 s
    rows = []
    for name, case in CANCELLER_CASES:
        case = dict(case)
        aec = {k: case.pop(k) for k in ("noise_suppression",) if k in case}
        room = SimulatedRoom(speed=np.inf, **case)
        cleaned, echo, cpu_s = cancel_in_room(room, far, make_canceller(AECConfig(**aec)))
        seconds = len(cleaned) / 16000
        rows.append({"case": name, "erle_db": round(erle_db(echo, cleaned), 1),
                     "cpu_percent_of_a_core": round(100 * cpu_s / seconds, 2), "seconds": round(seconds, 1)})
        log.info("%s: %s", name, rows[-1])
    return rows


# ---- part 2: the pipeline ------------------------------------------------------------------------------------------
class Logs(logging.Handler):
    """Keeps the STT's transcripts by turn."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.transcripts: dict[int, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        match = re.match(r"STT: turn (\d+): (['\"])(.*)\2 \(", record.getMessage())  # the text as %r writes it
        if match and record.name == "handlers.stt":
            self.transcripts[int(match.group(1))] = match.group(3)


def config(*extra: str):
    return integration_config(_convert_smollm2(), "pipeline.duplex=full", "llm.max_history_turns=0", *extra)


def interruption_trials(room_name: str, path: EchoPath, trials: int, logs: Logs, rng: np.random.Generator,
                        install) -> list[dict]:
    room = SimulatedRoom(path, speed=1.0)
    install(room)
    rows = []
    with Duplex(room, config("llm.max_new_tokens=96")) as duplex:
        vad = duplex.stages["vad"]
        for trial in range(trials):
            question = QUESTIONS[trial % len(QUESTIONS)]
            story = duplex.ask(f"Tell me a long story about {TOPICS[trial % len(TOPICS)]}.")
            start = duplex.wait_playing()
            said = room.say(USER_LEVEL * speak(question), at_s=start + rng.uniform(1.0, 3.0), label=question)
            known = len(vad.interruptions)
            record = duplex.wait_record(story)
            found = [i for i in vad.interruptions[known:] if said.onset_s - 0.1 <= i.barge_in.onset_s <= said.end_s]
            row = {"room": room_name, "question": question, "into_reply_s": round(said.start_s - start, 2),
                   "missed": not record["interrupted"] or not found}
            if not row["missed"]:
                later = lambda s=story: [r for r in duplex.turns.records if r["turn"] > s]  # noqa: E731
                try:
                    answer = wait(later, 60, "the answer")[0]
                except AssertionError:  # interrupted, but the question made no turn
                    answer = {"turn": -1}
                row["answered"] = answer["turn"] > 0
                stop = speaker_stop_after(room, said.onset_s)
                quiet = bool(stop is not None and stop - said.onset_s < 0.01)  # the reply was in a pause (LLM/TTS late)
                row.update(onset_to_stop_ms=None if stop is None or quiet else round((stop - said.onset_s) * 1000),
                           speaker_quiet_at_onset=quiet,
                           decided_from_onset_ms=round((found[0].barge_in.decided_s - said.onset_s) * 1000),
                           barge_in_detected_ms=record["barge_in_detected_ms"],
                           playback_stopped_ms=record["playback_stopped_ms"],
                           heard=logs.transcripts.get(answer["turn"], ""))
                said_words = words(question)
                row["word_recall"] = round(len(said_words & words(row["heard"])) / len(said_words), 2)
                if row["answered"]:
                    duplex.wait_record(answer["turn"])
            rows.append(row)
            log.info("%s", row)
        false = [i for i in vad.interruptions if not any(u.onset_s - 0.1 <= i.barge_in.onset_s <= u.end_s
                                                         for u in room.script)]
    for row in rows:
        row["false_interruptions_in_room"] = len(false)
    return rows


def echo_only(replies: int, install) -> dict:
    room = SimulatedRoom(LOUD_ROOM, speed=2.0)
    install(room)
    with Duplex(room, config("llm.max_new_tokens=24")) as duplex:
        for k in range(replies):
            duplex.wait_record(duplex.ask(f"Tell me about {TOPICS[k % len(TOPICS)]}."))
        vad = duplex.stages["vad"]
        played = np.count_nonzero(np.abs(room.recorded("speaker")) > 0.005) / room.speaker_rate
        return {"replies": replies, "seconds_of_voice": round(played), "false_interruptions": len(vad.interruptions),
                "pauses": len(vad.pauses), "turns_from_echo": len(duplex.turns.records) - replies,
                "speaker_underflows": room.underflows}


def backchannels(trials: int, rng: np.random.Generator, install) -> dict:
    room = SimulatedRoom(NORMAL_ROOM, speed=1.0)
    install(room)
    with Duplex(room, config("llm.max_new_tokens=48")) as duplex:
        interrupted = 0
        for k in range(trials):
            turn_id = duplex.ask(f"Tell me about {TOPICS[k % len(TOPICS)]}.")
            start = duplex.wait_playing()
            room.say(hum(0.15), at_s=start + rng.uniform(1.0, 2.0), label="mm")
            interrupted += bool(duplex.wait_record(turn_id)["interrupted"])
        vad = duplex.stages["vad"]
        return {"replies": trials, "false_interruptions": len(vad.interruptions), "interrupted_turns": interrupted,
                "pauses": len(vad.pauses), "turns_from_mm": len(duplex.turns.records) - trials}


def percentiles(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    if len(values) == 1:
        return values[0], values[0]
    deciles = statistics.quantiles(values, n=10, method="inclusive")
    return round(statistics.median(values)), round(deciles[8])


# ---- the report ----------------------------------------------------------------------------------------------------
def versions() -> str:
    names = ("livekit", "numpy", "torch", "silero-vad", "faster-whisper", "ctranslate2", "piper-tts", "transformers")
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def report(result: dict) -> str:
    s = result["summary"]
    lines = [f"# Full duplex on the CPU ({result['date']})", "",
             f"{result['machine']}; {result['versions']}. `python bench/duplex.py {result['args']}`.", "",
             f"**Load average (1 min): {result['load_before']} before, {result['load_after']} after** (2 cores: above "
             "about 1, other processes shared the cores; part 2's times grow with it, part 1's ERLE does not).", "",
             "## Summary", "", "| | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in s.items()]
    lines += ["", "## The canceller alone (WebRTC AEC3 via livekit, 16 kHz, 10 ms frames)", "",
              "| room / device | ERLE after 2 s (dB) | CPU, % of one core | audio (s) |", "|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['erle_db']} | {r['cpu_percent_of_a_core']} | {r['seconds']} |"
              for r in result["canceller"]]
    lines += ["", "## Interruptions", "",
              "| room | question | into the reply (s) | missed | onset to stop (ms) | decision from onset (ms) | "
              "record: barge-in / playback stopped (ms) | heard | word recall |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in result["interruptions"]:
        stop = "(quiet already)" if r.get("speaker_quiet_at_onset") else r.get("onset_to_stop_ms", "")
        lines.append(f"| {r['room']} | {r['question']} | {r['into_reply_s']} | {'yes' if r['missed'] else 'no'} | "
                     f"{stop} | {r.get('decided_from_onset_ms', '')} | "
                     f"{r.get('barge_in_detected_ms', '')} / {r.get('playback_stopped_ms', '')} | "
                     f"{r.get('heard', '')} | {r.get('word_recall', '')} |")
    lines += ["", "## Echo only and backchannels", "", f"- echo only (loud room, twice real time): {result['echo']}",
              f"- backchannels (a 150 ms \"mm\" 1-2 s into a reply, normal room): {result['backchannel']}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.md and OUT.json")
    parser.add_argument("--trials", type=int, default=8, help="interruptions per room")
    parser.add_argument("--replies", type=int, default=20, help="echo-only replies")
    parser.add_argument("--backchannels", type=int, default=8)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    logs = Logs()
    logging.getLogger("handlers.stt").addHandler(logs)
    rng = np.random.default_rng(args.seed)
    load_before = round(os.getloadavg()[0], 2)

    def install(room: SimulatedRoom) -> None:
        sys.modules["sounddevice"] = room.sounddevice

    t0 = time.monotonic()
    canceller = canceller_alone()
    trials = (interruption_trials("normal", NORMAL_ROOM, args.trials, logs, rng, install)
              + interruption_trials("loud", LOUD_ROOM, args.trials, logs, rng, install))
    echo = echo_only(args.replies, install)
    log.info("echo only: %s", echo)
    backchannel = backchannels(args.backchannels, rng, install)
    log.info("backchannels: %s", backchannel)

    caught = [t for t in trials if not t["missed"]]
    false_in_trials = sum({t["room"]: t["false_interruptions_in_room"] for t in trials}.values())
    replies = echo["replies"] + backchannel["replies"]
    summary = {
        "false-interruption rate (echo-only and backchannel replies)":
            f"{echo['false_interruptions'] + backchannel['false_interruptions']}/{replies}",
        "false interruptions during the interruption trials": false_in_trials,
        "missed-interruption rate": f"{len(trials) - len(caught)}/{len(trials)}",
        "interrupted, but the question made no turn": sum(not t["answered"] for t in caught),
    }
    for room in ("normal", "loud", None):
        chosen = [t for t in caught if room is None or t["room"] == room]
        stop = percentiles([t["onset_to_stop_ms"] for t in chosen if t["onset_to_stop_ms"] is not None])
        decided = percentiles([t["decided_from_onset_ms"] for t in chosen])
        label = f"{room} room" if room else "all"
        summary[f"onset to stop p50 / p90 (ms), {label}"] = f"{stop[0]} / {stop[1]}"
        summary[f"barge-in decision from onset p50 / p90 (ms), {label}"] = f"{decided[0]} / {decided[1]}"
    summary["STT word recall of the interrupting questions (mean)"] = round(
        statistics.mean(t["word_recall"] for t in caught), 2) if caught else None
    summary["ERLE, issue room (dB)"] = canceller[0]["erle_db"]
    summary["ERLE, worst case above (dB)"] = min(r["erle_db"] for r in canceller)
    summary["canceller CPU, % of one core (issue room)"] = canceller[0]["cpu_percent_of_a_core"]
    result = {"date": datetime.date.today().isoformat(), "machine": machine(), "versions": versions(),
              "args": " ".join(sys.argv[1:]), "load_before": load_before, "load_after": round(os.getloadavg()[0], 2),
              "minutes": round((time.monotonic() - t0) / 60, 1), "summary": summary, "canceller": canceller,
              "interruptions": trials, "echo": echo, "backchannel": backchannel}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".json", json.dumps(result, indent=1) + "\n"), (".md", report(result))):
        staging = args.out.with_name(f".{args.out.name}{suffix}.partial")
        staging.write_text(text)
        staging.replace(args.out.with_suffix(suffix))  # whole or not at all
    print(report(result))


if __name__ == "__main__":
    main()
