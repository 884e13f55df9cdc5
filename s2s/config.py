"""Flat configuration dataclasses, one per component, loaded from TOML.

The dataclass defaults are the defaults (``configs/default.toml`` lists them for reading); per-device files
(``configs/*.toml``) are merged over them, then ``section.key=value`` overrides from the command line.
Unknown sections or keys and bad values raise ``ValueError`` naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from s2s.devices import DEVICES, DTYPES
from s2s.qwen3_tts import options as qwen3

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib


def _check_choice(section: str, key: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"[{section}] {key} = {value!r} is not allowed; use one of: {', '.join(map(repr, allowed))}")


DUPLEX_MODES = ("half", "full")
RENAMED = {("pipeline", "half_duplex"): 'duplex = "half" (the microphone muted while the assistant replies) or '
                                        '"full" (echo cancellation and barge-in)'}
"""Keys that were replaced: (section, old key) -> what to write instead."""
LLM_DECODES = ("auto", "transformers")
INT_LIMIT = 2**31 - 1
"""No integer setting may exceed this (the code passes them to C libraries and numpy)."""


def _check_range(section: str, key: str, value: float, lo: float | None = None, hi: float | None = None) -> None:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"{'>= ' + str(lo) if lo is not None else ''}{' and ' if lo is not None and hi is not None else ''}"
        bounds += f"{'<= ' + str(hi) if hi is not None else ''}"
        raise ValueError(f"[{section}] {key} = {value!r} is out of range; it must be {bounds}")


@dataclass
class PipelineConfig:
    """How the stages are wired and supervised."""

    queue_size: int = 64
    """Bound of every inter-stage queue (items)."""
    poll_s: float = 0.1
    """How often a handler checks for a stop request while idle (s)."""
    duplex: str = "half"
    """"half": the microphone is muted while the assistant thinks and speaks. "full": it stays open, the speaker's
    echo is cancelled ([aec]) and the user can interrupt ([vad] barge_in_*); needs the live microphone and speaker
    (--input/--text/--output runs are half duplex)."""
    max_turn_s: float = 60.0
    """Listening resumes after this long even if a stage never finished the turn (s)."""
    hang_timeout_s: float = 30.0
    """A stage busy on one item for longer than this without progress is reported as hung (s)."""
    latency_log: str = ""
    """File to append one JSON line of timestamps per turn to; "" = log only, except that `s2s run --output
    X.wav` then writes X.latency.jsonl."""

    def validate(self) -> None:
        _check_choice("pipeline", "duplex", self.duplex, DUPLEX_MODES)
        _check_range("pipeline", "queue_size", self.queue_size, 1, 100_000)
        _check_range("pipeline", "poll_s", self.poll_s, 0.001, 1.0)
        _check_range("pipeline", "max_turn_s", self.max_turn_s, 1.0, 86400.0)
        _check_range("pipeline", "hang_timeout_s", self.hang_timeout_s, 0.1, 86400.0)


@dataclass
class AudioInConfig:
    """Microphone capture."""

    device: str = ""
    """Input device by name (substring) or index; "" = the system default."""
    sample_rate: int = 0
    """Capture rate (Hz); 0 = the device's own default rate. Audio is resampled to 16 kHz."""
    block_ms: int = 32
    """Capture block length (ms); also the frame length fed from --input files."""
    realtime_file: bool = False
    """Feed --input files at real-time speed, as a microphone would (latency measurements); False = as fast as
    the VAD takes them."""
    max_file_s: float = 3600.0
    """Longest --input file accepted (s, from its header): a longer one is refused before it is read (in a
    folder it is skipped and listed). Files are decoded in blocks, so this bounds a run's length, not its memory."""

    def validate(self) -> None:
        _check_range("audio_in", "sample_rate", self.sample_rate, 0, 384000)
        _check_range("audio_in", "max_file_s", self.max_file_s, 1.0, 86400.0)
        _check_range("audio_in", "block_ms", self.block_ms, 5, 1000)


@dataclass
class AudioOutConfig:
    """Speaker playback."""

    device: str = ""
    """Output device by name (substring) or index; "" = the system default."""
    sample_rate: int = 0
    """Playback rate (Hz); 0 = the rate the TTS speaks at (a speaker that refuses it plays at its own default
    rate). Audio at another rate is resampled once, here."""
    block_size: int = 1024
    """Frames per playback block; every block written has exactly this size."""

    def validate(self) -> None:
        if self.sample_rate:
            _check_range("audio_out", "sample_rate", self.sample_rate, 8000, 384000)
        _check_range("audio_out", "block_size", self.block_size, 32, 65536)


@dataclass
class AECConfig:
    """Acoustic echo cancellation of the microphone in full duplex ([pipeline] duplex = "full")."""

    backend: str = "webrtc"
    """An echo canceller by name: webrtc (WebRTC AEC3 from the livekit package), none (a headset or a
    speakerphone that cancels its own echo), or a plugin's (`s2s check` lists them)."""
    noise_suppression: bool = True
    """Also suppress steady noise (and what is left of the echo)."""
    high_pass_filter: bool = True
    """Remove rumble below ~80 Hz before cancelling."""

    def validate(self) -> None:
        pass


@dataclass
class VADConfig:
    """Voice activity detection (Silero: 16 kHz, 512-sample frames)."""

    backend: str = "silero"
    """A VAD backend by name (`s2s check` lists the installed ones)."""
    threshold: float = 0.5
    """Speech probability that starts an utterance."""
    min_speech_ms: int = 250
    """Shorter bursts are dropped."""
    min_silence_ms: int = 500
    """Silence that ends an utterance."""
    speech_pad_ms: int = 300
    """Audio kept before the triggering frame and after the last voiced frame."""
    max_utterance_s: float = 30.0
    """An utterance is cut (and sent) at this length."""
    onnx: bool = False
    """Use the ONNX model (onnxruntime) instead of the TorchScript one."""
    early_stt_ms: int = 160
    """After this much silence the utterance so far is transcribed speculatively (ms; 0 = off): if the silence
    reaches min_silence_ms with no new speech, the transcript is already there; if the user speaks on, it is
    discarded. A value of min_silence_ms or more never speculates."""
    barge_in_min_speech_ms: int = 200
    """Full duplex: this much of the user's speech while the assistant thinks or speaks interrupts it (the reply
    pauses from a quarter of it on); shorter sounds, a "mm" or a cough, do not."""
    barge_in_threshold: float = 0.4
    """Full duplex: speech probability a frame needs to count towards an interruption (under ``threshold``: the
    canceller thins the user's voice while the assistant speaks, and Silero rates it lower)."""
    echo_margin_db: float = 10.0
    """Full duplex: sound counts as the user's only where it is this much louder than the echo expected from what
    the speaker played."""

    def validate(self) -> None:
        _check_range("vad", "threshold", self.threshold, 0.0, 1.0)
        _check_range("vad", "barge_in_min_speech_ms", self.barge_in_min_speech_ms, 32, 10_000)
        _check_range("vad", "barge_in_threshold", self.barge_in_threshold, 0.0, 1.0)
        _check_range("vad", "echo_margin_db", self.echo_margin_db, 0.0, 60.0)
        _check_range("vad", "min_speech_ms", self.min_speech_ms, 0, 60_000)
        _check_range("vad", "min_silence_ms", self.min_silence_ms, 32, 60_000)
        _check_range("vad", "speech_pad_ms", self.speech_pad_ms, 0, 10_000)
        _check_range("vad", "max_utterance_s", self.max_utterance_s, 1.0, 3600.0)
        _check_range("vad", "early_stt_ms", self.early_stt_ms, 0, 60_000)


@dataclass
class EndOfTurnConfig:
    """Ending the user's turn sooner when the words are finished: a small chat model reads the speculative
    transcript (made at ``vad.early_stt_ms`` of silence) and rates how likely the user's message ends there."""

    silence_ms: int = 0
    """Silence after which an utterance whose transcript the model rates as finished ends (ms; 0 = off: every
    utterance waits for vad.min_silence_ms). Until vad.min_silence_ms has passed, speech that resumes takes the turn
    back (before its reply is heard) and the utterance goes on."""
    model: str = ""
    """A chat model: a transformers folder, a .gguf file or a hub name; "" = the embedded SmolLM2-135M-Instruct."""
    threshold: float = 0.01
    """Probability of the end-of-message token after the words, at or above which they count as finished (SmolLM2:
    about 0.03-0.9 after a finished question or request, under 0.002 after a cut-off one)."""
    device: str = "auto"
    """Where the model runs (auto: CUDA when torch sees it)."""

    def validate(self) -> None:
        _check_range("end_of_turn", "silence_ms", self.silence_ms, 0, 60_000)
        _check_range("end_of_turn", "threshold", self.threshold, 0.0, 1.0)
        _check_choice("end_of_turn", "device", self.device, DEVICES)


@dataclass
class STTConfig:
    """Speech to text (faster-whisper)."""

    backend: str = "faster-whisper"
    """An STT backend by name (`s2s check` lists the installed ones)."""
    model: str = ""
    """A CTranslate2 model directory or a faster-whisper model name; "" = the model setup.sh downloaded,
    else the embedded Whisper tiny.en."""
    device: str = "auto"
    compute_type: str = "default"
    """CTranslate2 compute type: default, int8, int8_float16, float16, float32."""
    language: str = "auto"
    """A language code ("en") or "auto" to detect it."""
    beam_size: int = 1
    cpu_threads: int = 0
    """Threads of the CPU decode; 0 = the usable cores, at most 4 (CTranslate2's own default of 4 threads
    oversubscribes a 2-core machine: a 3 s question took 0.74 s there, 0.53 s with 2 threads)."""

    def validate(self) -> None:
        _check_choice("stt", "device", self.device, DEVICES)
        _check_range("stt", "cpu_threads", self.cpu_threads, 0, 256)
        _check_choice("stt", "compute_type", self.compute_type,
                      ("default", "auto", "int8", "int8_float16", "int8_float32", "float16", "bfloat16", "float32"))
        _check_range("stt", "beam_size", self.beam_size, 1, 10)


@dataclass
class LLMConfig:
    """The language model (transformers causal LM, optionally from a GGUF file)."""

    backend: str = "transformers"
    """An LLM backend by name (`s2s check` lists the installed ones)."""
    model: str = ""
    """A model directory, a GGUF file, or a hub name; "" = the model setup.sh downloaded, else the embedded
    SmolLM2-135M-Instruct GGUF."""
    device: str = "auto"
    dtype: str = "auto"
    system_prompt: str = (
        "You are a helpful voice assistant. Answer in one or two short spoken sentences, without lists or markdown."
    )
    max_history_turns: int = -1
    """User/assistant exchanges kept in the chat history; -1 = by model size: none under 1B parameters (a 135M
    model copies its earlier replies: bench/results/2026-12-02-history-cpu.md), 4 from 1B up."""
    max_new_tokens: int = 96
    temperature: float = 0.0
    """0 = greedy."""
    min_chunk_chars: int = 12
    """A clause shorter than this is joined to the next one before it is spoken."""
    first_chunk_words: int = 8
    """The first chunk of a reply is also cut after this many words when no clause has ended by then, so the
    speech starts sooner; 0 = only at clause and sentence ends."""
    decode: str = "auto"
    """"auto": our static-cache decode (CUDA graphs on a GPU, the same code eagerly on a CPU) for Llama/SmolLM,
    Mistral, Qwen2/2.5 and Qwen3 models, the transformers loop for others; "transformers": always that loop."""
    max_seq_len: int = 2048
    """Prompt + reply tokens the static decode's KV cache holds; a longer conversation takes the transformers
    loop."""
    enforce_eager: bool = False
    """Never capture CUDA graphs for the LLM decode (debugging, parity)."""

    def validate(self) -> None:
        _check_choice("llm", "device", self.device, DEVICES)
        _check_choice("llm", "dtype", self.dtype, DTYPES)
        _check_range("llm", "max_history_turns", self.max_history_turns, -1, 1000)
        _check_range("llm", "max_new_tokens", self.max_new_tokens, 1, 4096)
        _check_range("llm", "temperature", self.temperature, 0.0, 5.0)
        _check_range("llm", "min_chunk_chars", self.min_chunk_chars, 1, 10_000)
        _check_range("llm", "first_chunk_words", self.first_chunk_words, 0, 10_000)
        _check_choice("llm", "decode", self.decode, LLM_DECODES)
        _check_range("llm", "max_seq_len", self.max_seq_len, 64, 1_048_576)


@dataclass
class TTSConfig:
    """Text to speech. ``auto`` = qwen3 when a Qwen3-TTS checkpoint is found, else piper."""

    backend: str = "auto"
    """A TTS backend by name: auto, qwen3, qwen3-reference, piper, or a plugin's (`s2s check` lists them)."""
    model: str = ""
    """Qwen3-TTS checkpoint directory; "" = the one setup.sh downloaded (models/Qwen3-TTS-12Hz-0.6B-CustomVoice)."""
    piper_voice: str = ""
    """Piper .onnx voice; "" = the embedded joe-us voice."""
    device: str = "auto"
    dtype: str = "auto"
    """auto = bfloat16 on CUDA, float32 on CPU."""
    speaker: str = ""
    """CustomVoice speaker; "" = the checkpoint's first speaker."""
    language: str = "auto"
    instruct: str = ""
    """Style instruction (1.7B CustomVoice, VoiceDesign)."""
    ref_audio: str = ""
    """Base (voice clone): reference WAV."""
    ref_text: str = ""
    """Base (voice clone): transcript of the reference; "" = x-vector-only mode."""
    voice_prompt: str = ""
    """Base (voice clone): a voice prompt file written by ``s2s.qwen3_tts.VoicePrompt.save``."""
    chunk_size: int = qwen3.CHUNK_SIZE
    """Codec frames (80 ms each) per streamed audio chunk."""
    first_chunk_size: int = qwen3.FIRST_CHUNK_SIZE
    """Frames in the first chunk (smaller = earlier first audio)."""
    max_seq_len: int = 2048
    """Prompt + generated frames the static KV cache holds."""
    max_text_chars: int = 800
    """Longer text is split into sentences and synthesized piece by piece."""
    max_new_tokens: int = 0
    """Cap on codec frames generated per request (80 ms each); 0 = the backend's own bound (qwen3: 8 frames
    per text token + 50; qwen3-reference: max_seq_len)."""
    enforce_eager: bool = False
    """Never capture CUDA graphs (debugging, parity)."""
    compile: bool = False
    """torch.compile the per-layer step functions inside the graphs (desktop GPUs with Triton; not on Jetson).
    Measured no faster than the plain graphs (bench/results/2026-12-01-h200.md)."""
    do_sample: bool = qwen3.SamplingParams.do_sample
    temperature: float = qwen3.SamplingParams.temperature
    top_k: int = qwen3.SamplingParams.top_k
    top_p: float = qwen3.SamplingParams.top_p
    repetition_penalty: float = qwen3.SamplingParams.repetition_penalty
    seed: int = -1
    """-1 = random."""

    def validate(self) -> None:
        _check_choice("tts", "device", self.device, DEVICES)
        _check_choice("tts", "dtype", self.dtype, DTYPES)
        _check_range("tts", "chunk_size", self.chunk_size, 1, 300)
        _check_range("tts", "first_chunk_size", self.first_chunk_size, 1, 300)
        _check_range("tts", "max_seq_len", self.max_seq_len, 64, 32768)
        _check_range("tts", "max_text_chars", self.max_text_chars, 1, 100_000)
        _check_range("tts", "max_new_tokens", self.max_new_tokens, 0, 32768)
        _check_range("tts", "seed", self.seed, -1, INT_LIMIT)
        try:
            self.sampling()
        except ValueError as exc:
            raise ValueError(f"[tts] {exc}") from None

    def sampling(self) -> qwen3.SamplingParams:
        """The [tts] sampling keys as the engine's parameters (one setting for the talker and code predictor)."""
        return qwen3.SamplingParams.same_for_both(
            do_sample=self.do_sample, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
            repetition_penalty=self.repetition_penalty, seed=self.seed if self.seed >= 0 else None)


@dataclass
class ServerConfig:
    """`s2s serve` (OpenAI-compatible HTTP) and `s2s wyoming` (Home Assistant): address, key, limits, voices."""

    host: str = "127.0.0.1"
    """Address to listen on; loopback by default. "0.0.0.0" opens it to the network: set an API key then."""
    port: int = 8000
    """HTTP port of `s2s serve`."""
    wyoming_tts_port: int = 10200
    """Wyoming TTS port of `s2s wyoming` (what Home Assistant users know from wyoming-piper)."""
    wyoming_stt_port: int = 10300
    """Wyoming STT port of `s2s wyoming` (as wyoming-faster-whisper)."""
    api_key: str = ""
    """Clients must send `Authorization: Bearer KEY`; "" = the key in api_key_file or $S2S_API_KEY, else none."""
    api_key_file: str = ""
    """File whose first line is the API key (a missing file stops the server at start)."""
    queue_size: int = 8
    """Requests that may wait for the TTS engine (and, apart, for the STT); more are answered 503 + Retry-After."""
    max_input_chars: int = 4096
    """Longest speech `input` (characters), as OpenAI's limit."""
    max_body_mb: float = 1.0
    """Largest JSON request body (MB)."""
    max_upload_mb: float = 25.0
    """Largest multipart upload (transcription audio, voice reference) (MB), as OpenAI's limit."""
    max_audio_s: float = 600.0
    """Longest audio a transcription accepts (s)."""
    max_batch: int = 1
    """Speech requests the qwen3 engine serves at once, sharing each frame step (continuous batching); 1 = one
    after another. Each row slot holds a KV cache of tts.max_seq_len positions: `s2s check` shows the memory."""
    request_timeout_s: float = 300.0
    """A request (queue wait included) that takes longer is cancelled (504, or the stream ends)."""
    voices_dir: str = ""
    """Where uploaded clone voices are kept; "" = $S2S_VOICES_DIR, else ~/.local/share/s2s-edge/voices."""
    voice_map: str = ""
    """OpenAI voice names mapped to ours, "name=ours" pairs separated by commas (e.g. "alloy=vivian, onyx=ryan");
    an OpenAI name not listed speaks with the configured voice."""

    def validate(self) -> None:
        if not self.host.strip() or any(c.isspace() for c in self.host):
            raise ValueError(f"[server] host = {self.host!r} must be a host name or IP address (e.g. 127.0.0.1)")
        for key in ("port", "wyoming_tts_port", "wyoming_stt_port"):
            _check_range("server", key, getattr(self, key), 1, 65535)
        _check_range("server", "queue_size", self.queue_size, 0, 10_000)
        _check_range("server", "max_batch", self.max_batch, 1, 64)
        _check_range("server", "max_input_chars", self.max_input_chars, 1, 100_000)
        _check_range("server", "max_body_mb", self.max_body_mb, 0.001, 1024.0)
        _check_range("server", "max_upload_mb", self.max_upload_mb, 0.001, 4096.0)
        _check_range("server", "max_audio_s", self.max_audio_s, 1.0, 86400.0)
        _check_range("server", "request_timeout_s", self.request_timeout_s, 1.0, 86400.0)
        self.voices()

    def voices(self) -> dict[str, str]:
        """``voice_map`` as {OpenAI name: our voice} (names lower case)."""
        mapping = {}
        for pair in filter(None, (part.strip() for part in self.voice_map.split(","))):
            name, sep, ours = (text.strip() for text in pair.partition("="))
            if not sep or not name or not ours:
                raise ValueError(f"[server] voice_map entry {pair!r} must look like name=voice (e.g. alloy=vivian)")
            mapping[name.lower()] = ours
        return mapping


@dataclass
class Config:
    """The whole configuration: one field per TOML section."""

    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    audio_in: AudioInConfig = field(default_factory=AudioInConfig)
    audio_out: AudioOutConfig = field(default_factory=AudioOutConfig)
    aec: AECConfig = field(default_factory=AECConfig)
    vad: VADConfig = field(default_factory=VADConfig)
    end_of_turn: EndOfTurnConfig = field(default_factory=EndOfTurnConfig)
    stt: STTConfig = field(default_factory=STTConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    tts: TTSConfig = field(default_factory=TTSConfig)
    server: ServerConfig = field(default_factory=ServerConfig)

    def validate(self) -> None:
        for f in fields(self):
            getattr(self, f.name).validate()


def _coerce(section: str, key: str, value: Any, typ: type) -> Any:
    """Check a TOML value (or an override string) against the field's type."""
    if isinstance(value, str) and typ is not str:
        text = value.strip()
        try:
            if typ is bool:
                if text.lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                    raise ValueError(text)
                return text.lower() in ("true", "1", "yes", "on")
            value = typ(text)
        except ValueError:
            raise ValueError(f"[{section}] {key} = {value!r} is not a valid {typ.__name__}") from None
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if typ is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, typ) or (typ is not bool and isinstance(value, bool)):
        raise ValueError(f"[{section}] {key} = {value!r} must be of type {typ.__name__}, not {type(value).__name__}")
    if typ is float and not math.isfinite(value):
        raise ValueError(f"[{section}] {key} = {value!r} must be a finite number")
    if typ is int and abs(value) > INT_LIMIT:
        raise ValueError(f"[{section}] {key} = {value!r} is out of range; it must be between {-INT_LIMIT} and "
                         f"{INT_LIMIT}")
    return value


def _apply(config: Config, data: dict[str, Any], origin: str) -> None:
    sections = {f.name: f for f in fields(config)}
    for section, values in data.items():
        if section not in sections:
            raise ValueError(f"{origin}: unknown section [{section}]; known sections: {', '.join(sections)}")
        if not isinstance(values, dict):
            raise ValueError(f"{origin}: [{section}] must be a table of keys")
        target = getattr(config, section)
        hints = get_type_hints(type(target))
        known = {f.name for f in fields(target)}
        for key, value in values.items():
            if (section, key) in RENAMED:
                raise ValueError(f"{origin}: {section}.{key} is gone; use {section}.{RENAMED[section, key]}")
            if key not in known:
                raise ValueError(
                    f"{origin}: unknown key {section}.{key}; keys of [{section}]: {', '.join(sorted(known))}"
                )
            setattr(target, key, _coerce(section, key, value, hints[key]))


def parse_override(text: str) -> dict[str, dict[str, str]]:
    """``section.key=value`` -> ``{section: {key: value}}``."""
    name, sep, value = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise ValueError(f"override {text!r} must look like section.key=value (e.g. tts.backend=piper)")
    return {section: {key: value}}


def load_config(paths: list[str | Path] = (), overrides: list[str] = ()) -> Config:
    """Defaults, then each TOML file in order, then the command-line overrides; validated."""
    config = Config()
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config file {path} not found; pass an existing .toml file (see configs/)")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(f"config file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it "
                             f"as UTF-8") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"config file {path} is not valid TOML: {exc}") from None
        _apply(config, data, str(path))
    for text in overrides:
        _apply(config, parse_override(text), f"override {text!r}")
    config.validate()
    return config


def as_dict(config: Config) -> dict[str, dict[str, Any]]:
    """The configuration as nested dicts (for logging and `s2s check`)."""
    return dataclasses.asdict(config)
