"""Our TTS inside huggingface/speech-to-speech 1.1.0 (``s2s.integrations.speech_to_speech``).

speech-to-speech wants transformers >= 5.18 for its own models; its text -> TTS path does not need them. So the
test installs it with ``--no-deps`` (plus the few modules its command line and pipeline import that our stack lacks)
into a folder that goes in front of this venv on PYTHONPATH: their code on our stack, in a fresh interpreter,
offline. The folder is cached under build/, keyed by the requirement list. Without PyPI the test is skipped, except
under CI ($S2S_CI=1).

In that interpreter: ``register()``; their ``parse_arguments`` selects ``--tts s2s-edge`` with ``--s2s_edge_*``
options; their ``create_backend_handler`` builds our handler from a ``HandlerContext`` as their pipeline does; their
``LMOutputProcessor`` feeds it from LLM output on their queues, both on their ``ThreadManager`` threads. Then:
one response is spoken (16 kHz int16 blocks of 512, equal to our engine's own audio resampled), one is interrupted
with their ``CancelScope.cancel()`` after its first block (the rest is not spoken, its queued text is dropped), and
the next response after it is spoken whole again; a response's language and the session's voice reach the engine.
About 20 s on two cores, 6 s more the first time (the install).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import CI_ENV
from fresh_python import REPO, run_python

from s2s.audio import resample
from s2s.checkpoint_builder.build import build_checkpoint
from s2s.integrations.speech_to_speech import register
from s2s.integrations.speech_to_speech.arguments import S2SEdgeTTSArguments, settings, tts_config
from s2s.integrations.speech_to_speech.audio_blocks import PipelineBlocks
from s2s.server.audio_codecs import to_pcm16

S2S_SPEECH_TO_SPEECH = ("speech-to-speech==1.1.0", "nltk==3.10.3", "defusedxml==0.7.1", "jsonschema==4.26.0",
                        "jsonschema-specifications==2025.9.1", "referencing==0.37.0", "rpds-py==2026.9.1",
                        "attrs==26.1.0")
"""Installed with --no-deps over this venv: speech-to-speech, and what its command line and pipeline modules import
that our stack may lack (nltk, which imports defusedxml; jsonschema with its four dependencies)."""
NLTK_RESOURCES = ("tokenizers/punkt_tab", "taggers/averaged_perceptron_tagger_eng")
"""What speech-to-speech's pipeline module downloads at import when nltk cannot find it; the TTS path never uses
them, so empty stand-ins keep the import offline."""
MAX_NEW_TOKENS = 40
"""Random weights never end an utterance: each one is 39 codec frames (3.1 s, 98 blocks)."""


# -- audio blocks (no speech-to-speech needed) -----------------------------------------------------------------------
def test_blocks_are_the_whole_stream_resampled_and_cut():
    rng = np.random.default_rng(0)
    audio = (0.3 * rng.standard_normal(24000 + 777)).astype(np.float32)
    blocks = PipelineBlocks(24000, 512)
    out = [b for part in np.array_split(audio, [1920, 3840, 11111, 20000]) for b in blocks(part)] + blocks.flush()
    assert all(b.dtype == np.int16 and b.shape == (512,) for b in out)
    expected = np.frombuffer(to_pcm16(resample(audio, 24000, 16000)), dtype="<i2")
    got = np.concatenate(out)
    assert len(out) == -(-expected.size // 512)
    assert np.abs(got[: expected.size].astype(int) - expected).max() <= 1  # float rounding of the two filters
    assert not got[expected.size :].any()  # the last block padded with silence
    again = [b for b in blocks(audio)] + blocks.flush()  # flush() made it ready for the next utterance
    np.testing.assert_array_equal(np.concatenate(again), got)


def test_bad_settings_say_what_to_change():
    with pytest.raises(ValueError, match="s2s_edge_blocksize = 0"):
        PipelineBlocks(24000, 0)
    with pytest.raises(ValueError, match="unknown s2s-edge TTS setting.*voicee"):
        tts_config({"voicee": "x"})
    with pytest.raises(ValueError, match="temperature"):
        tts_config({"temperature": 0.0})
    defaults = settings(S2SEdgeTTSArguments())
    assert defaults["backend"] == "qwen3" and defaults["blocksize"] == 512
    assert tts_config({k: v for k, v in defaults.items() if k != "blocksize"}).backend == "qwen3"


def test_register_without_speech_to_speech_gives_the_pip_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "speech_to_speech", None)  # makes the import fail as if it were not installed
    with pytest.raises(ImportError, match=r"pip install speech-to-speech==1\.1\.0"):
        register()


# -- their pipeline -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def overlay() -> Path:
    """A folder holding ``S2S_SPEECH_TO_SPEECH`` (installed once, whole or not at all)."""
    key = hashlib.sha256("\n".join(S2S_SPEECH_TO_SPEECH).encode()).hexdigest()[:12]
    folder = REPO / "build" / f"speech-to-speech-overlay-{key}"
    marker = folder / ".installed"
    if marker.is_file():
        return folder
    staging = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(staging),
                           *S2S_SPEECH_TO_SPEECH], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        message = f"pip could not install {' '.join(S2S_SPEECH_TO_SPEECH)}: {proc.stderr.strip()[-1500:]}"
        if os.environ.get(CI_ENV) == "1":
            pytest.fail(f"{message}\n({CI_ENV}=1: CI reaches PyPI, so this must work)")
        pytest.skip(message)
    (staging / ".installed").write_text("\n".join(S2S_SPEECH_TO_SPEECH) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder


@pytest.fixture(scope="module")
def pipeline_run(overlay, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("speech_to_speech")
    for resource in NLTK_RESOURCES:
        (root / "nltk_data" / resource).mkdir(parents=True)
    checkpoint = build_checkpoint(root / "custom_voice", size="tiny", kind="custom_voice", seed=0)
    case = {"model": str(checkpoint), "max_new_tokens": MAX_NEW_TOKENS, "text": "Hello there, how are you?",
            "long_text": "This answer goes on and on, far longer than anyone would listen to before speaking up. " * 2,
            "dropped_text": "This part of the interrupted answer is never spoken."}
    return run_python(PIPELINE_RUN, overlay, env={"S2S_CASE": json.dumps(case), "NLTK_DATA": str(root / "nltk_data")})


def test_the_launcher_offers_our_backend_and_options(pipeline_run):
    assert pipeline_run["launcher_help"] == {"s2s-edge": True, "--s2s_edge_model": True, "--s2s_edge_speaker": True}


def test_their_parser_selects_our_backend(pipeline_run):
    assert pipeline_run["selected"] == {"name": "s2s-edge", "model_set": True, "device": "cpu", "blocksize": 512}


def test_speaks_16khz_int16_blocks_equal_to_our_engine(pipeline_run):
    first = pipeline_run["first"]
    assert first["formats"] == [["int16", 512]]  # every block, as their realtime service sends them
    assert first["generations"] == [first["generation"]]  # tagged with the response's cancel generation
    assert first["events"] == ["AssistantOutputEvent", "after audio: AssistantResponseDoneEvent"]  # in order
    assert first["blocks"] == -(-first["reference_samples"] // 512)
    assert first["max_diff"] <= 1 and first["padding_silent"]


def test_the_response_language_is_spoken_where_the_checkpoint_has_it(pipeline_run):
    german = pipeline_run["german"]
    assert german["max_diff"] <= 1 and german["padding_silent"] and not german["same_as_default"]
    assert pipeline_run["dutch_same_as_default"]


def test_the_session_voice_picks_a_speaker_of_the_checkpoint(pipeline_run):
    ryan = pipeline_run["ryan"]
    assert ryan["max_diff"] <= 1 and ryan["padding_silent"] and not ryan["same_as_default"]
    assert pipeline_run["alloy_same_as_default"]


def test_interruption_stops_the_audio_and_the_next_response_is_whole(pipeline_run):
    cut, full = pipeline_run["interrupted"], pipeline_run["uninterrupted_blocks"]
    assert 1 <= cut["blocks"] <= 20 < full // 4, (cut["blocks"], full)  # first chunk (2 frames) + at most one more
    assert cut["done_after_s"] < 5.0  # back to its queue: the response's end marker follows at once
    assert cut["dropped_text_spoken"] is False  # its text still queued at the interruption never reaches it
    assert pipeline_run["after"] == pipeline_run["first"]["audio_sha"]  # the engine was left clean mid-stream
    assert pipeline_run["threads_alive_after_stop"] == 0


PIPELINE_RUN = r"""
import contextlib, hashlib, io, json, os, queue, sys, threading, time

import numpy as np
import torch

torch.set_num_threads(2)
case = json.loads(os.environ["S2S_CASE"])

from s2s.integrations.speech_to_speech import BACKEND, register
from s2s.integrations.speech_to_speech.__main__ import main as launcher

register()

from speech_to_speech.api.openai_realtime.runtime_config import RuntimeConfig
from speech_to_speech.backend_registry import HandlerContext, create_backend_handler
from speech_to_speech.LLM.lm_output_processor import LMOutputProcessor
from speech_to_speech.pipeline.cancel_scope import CancelScope
from speech_to_speech.pipeline.messages import AUDIO_RESPONSE_DONE, AudioOutput, EndOfResponse, LLMResponseChunk
from speech_to_speech.pipeline.speculative_turns import SpeculativeTurnTracker
from speech_to_speech.s2s_pipeline import parse_arguments
from speech_to_speech.utils.thread_manager import ThreadManager

from s2s.audio import resample
from s2s.server.audio_codecs import to_pcm16
from s2s.tts_engine import VoiceRequest

result = {}
help_text = io.StringIO()
sys.argv = ["speech-to-speech", "serve", "--tts", BACKEND, "--help"]
with contextlib.redirect_stdout(help_text), contextlib.suppress(SystemExit):
    launcher()
result["launcher_help"] = {word: word in help_text.getvalue()
                           for word in ("s2s-edge", "--s2s_edge_model", "--s2s_edge_speaker")}

args = parse_arguments(["--tts", BACKEND, "--s2s_edge_model", case["model"], "--s2s_edge_device", "cpu",
                        "--s2s_edge_dtype", "float32", "--s2s_edge_enforce_eager", "true",
                        "--s2s_edge_do_sample", "false", "--s2s_edge_speaker", "vivian",
                        "--s2s_edge_max_new_tokens", str(case["max_new_tokens"])])
selection = args.tts_backend
result["selected"] = {"name": selection.name, "model_set": selection.config["model"] == case["model"],
                      "device": selection.config["device"], "blocksize": selection.config["blocksize"]}

stop, scope, turns = threading.Event(), CancelScope(), SpeculativeTurnTracker()
llm_out, tts_in, audio_out, text_out = queue.Queue(), queue.Queue(), queue.Queue(), queue.Queue()
context = HandlerContext(stop_event=stop, queue_in=tts_in, queue_out=audio_out, text_output_queue=text_out,
                         should_listen=threading.Event(), cancel_scope=scope, speculative_turns=turns,
                         pipeline_index=0, sample_rate=16000, enable_live_transcription=False,
                         live_transcription_update_interval=1.0)
tts = create_backend_handler(selection, context)
processor = LMOutputProcessor(stop, queue_in=llm_out, queue_out=tts_in,
                              setup_kwargs={"speculative_turns": turns, "text_output_queue": text_out})
manager = ThreadManager([processor, tts])
manager.start()


def respond(key, *texts, language=None, session=None):
    generation = scope.generation
    for text in texts:
        llm_out.put(LLMResponseChunk(text=text, language_code=language, runtime_config=session,
                                     cancel_generation=generation, response_key=key))
    llm_out.put(EndOfResponse(cancel_generation=generation, response_key=key))
    return generation


def collect(on_first_block=None):
    # what the TTS stage sends for one response, up to its done marker
    blocks, generations, events = [], [], []
    while True:
        item = audio_out.get(timeout=120)
        audio = item.audio if isinstance(item, AudioOutput) else item
        if isinstance(audio, bytes) and audio == AUDIO_RESPONSE_DONE:
            return blocks, generations, events
        if isinstance(audio, np.ndarray):
            blocks.append(audio)
            generations.append(item.cancel_generation)
            if len(blocks) == 1 and on_first_block is not None:
                on_first_block()
        else:
            events.append(type(item).__name__ if not blocks else "after audio: " + type(item).__name__)


def sha(blocks):
    return hashlib.sha256(np.concatenate(blocks).tobytes()).hexdigest()


def compare(blocks, voice=None):
    # the blocks against our engine's own audio for the text, resampled in one go
    reference = np.concatenate(list(tts.engine.synthesize(case["text"], voice=voice)))
    expected = np.frombuffer(to_pcm16(resample(reference, tts.engine.sample_rate, 16000)), dtype="<i2")
    audio = np.concatenate(blocks)
    return {"reference_samples": int(expected.size), "blocks": len(blocks),
            "max_diff": int(np.abs(audio[: expected.size].astype(int) - expected).max()),
            "padding_silent": not audio[expected.size :].any()}


generation = respond("first", case["text"])
blocks, generations, events = collect()
result["first"] = {"formats": sorted({(str(b.dtype), *b.shape) for b in blocks}), "generation": generation,
                   "generations": sorted(set(generations)), "events": events, "audio_sha": sha(blocks),
                   **compare(blocks)}

respond("german", case["text"], language="de")
blocks, _, _ = collect()
result["german"] = {"same_as_default": sha(blocks) == result["first"]["audio_sha"],
                    **compare(blocks, VoiceRequest(language="de"))}
respond("dutch", case["text"], language="nl")  # not a language of the checkpoint: the configured voice speaks
blocks, _, _ = collect()
result["dutch_same_as_default"] = sha(blocks) == result["first"]["audio_sha"]
session = RuntimeConfig()
session.session.audio.output.voice = "Ryan"  # what a Realtime session.update sets
respond("ryan", case["text"], session=session)
blocks, _, _ = collect()
result["ryan"] = {"same_as_default": sha(blocks) == result["first"]["audio_sha"],
                  **compare(blocks, VoiceRequest(speaker="ryan"))}
session.session.audio.output.voice = "alloy"  # an OpenAI voice, not one of the checkpoint's speakers
respond("alloy", case["text"], session=session)
blocks, _, _ = collect()
result["alloy_same_as_default"] = sha(blocks) == result["first"]["audio_sha"]

cancelled_at, spoken = [], []
speak = tts.process
tts.process = lambda item: (spoken.append(getattr(item, "text", None)), speak(item))[1]  # what reaches it
respond("interrupted", case["long_text"], case["dropped_text"])
blocks, _, _ = collect(on_first_block=lambda: (scope.cancel(), cancelled_at.append(time.monotonic())))
result["interrupted"] = {"blocks": len(blocks), "done_after_s": time.monotonic() - cancelled_at[0],
                         "dropped_text_spoken": case["dropped_text"] in spoken}
scope.new_response()  # what their router does on the next response.create
uninterrupted = sum(b.size for b in tts.engine.synthesize(case["long_text"]))
result["uninterrupted_blocks"] = -(-int(uninterrupted * 2 // 3) // 512)

respond("after", case["text"])
blocks, _, _ = collect()
result["after"] = sha(blocks)

manager.stop()
result["threads_alive_after_stop"] = sum(t.is_alive() for t in manager.threads)
print(json.dumps(result))
"""
