"""``Qwen3TTS``: the fast decode engine for Qwen3-TTS 12 Hz checkpoints (CustomVoice, VoiceDesign, Base).

Loading reads the checkpoint folder itself (loader.py: config, safetensors weights in the engine's layout, text
tokenizer, speech tokenizer, speaker encoder), so it works on transformers 4.57 and 5.x alike. Decoding is the
engine's own: prompt prefill (one eager causal pass) -> per frame the code predictor step and the talker
step (CUDA graphs on CUDA unless ``enforce_eager``; the same functions eagerly on CPU) -> codes [T, 16] at 12.5
frames/s -> speech tokenizer decoder -> 24 kHz float32 audio, 1920 samples per frame.

The host reads the generated codes once per streamed chunk; that read is also the EOS check (a frame whose
codebook-0 id is EOS ends the utterance and is cut). Without EOS, ``max_new_tokens = N`` gives N - 1 frames, as
the reference.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from s2s.qwen3_tts.compiled import compile_steps
from s2s.qwen3_tts.graphs import GraphPool
from s2s.qwen3_tts.loader import Checkpoint, load_checkpoint
from s2s.qwen3_tts.options import CHUNK_SIZE, FIRST_CHUNK_SIZE, FRAME_SAMPLES, SAMPLE_RATE, SamplingParams, takes_instruct
from s2s.qwen3_tts.predictor import CodePredictor
from s2s.qwen3_tts.prompt import PromptBuilder, TalkerPrompt
from s2s.qwen3_tts.sampling import TALKER_MIN_NEW_TOKENS
from s2s.qwen3_tts.talker import Talker
from s2s.qwen3_tts.voice import VoicePrompt, create_voice_prompt

log = logging.getLogger(__name__)

FRAMES_PER_TEXT_TOKEN = 8
EXTRA_FRAMES = 50
CODES_CHUNK = 4
"""Frames between host reads (EOS checks) in ``generate_codes``."""


class Qwen3TTS:
    """The engine. ``enforce_eager`` runs the step functions without CUDA graphs (debugging, CPU).

    ``compile=True`` (desktop GPUs with Triton) puts the per-layer step functions through ``torch.compile``
    (compiled.py); they are still captured in the engine's own CUDA graphs. The plain graphs are the default and the
    Jetson path.
    """

    sample_rate = SAMPLE_RATE

    def __init__(self, checkpoint: Checkpoint, device: torch.device, dtype: torch.dtype, max_seq_len: int = 2048,
                 enforce_eager: bool = False, compile: bool = False):
        cfg = checkpoint.config
        self.device, self.dtype, self.max_seq_len = device, dtype, max_seq_len
        self.kind: str = cfg.tts_model_type
        self.model_size: str = cfg.tts_model_size
        self.captured_chunk_sizes: set[int] = set()
        """Chunk sizes whose codec decoder graph warm-up captured (empty without graphs)."""
        self._warned_chunk_sizes: set[int] = set()
        self.eos_id: int = cfg.talker_config.codec_eos_token_id
        self.predictor = CodePredictor(checkpoint.predictor, cfg.talker_config.num_code_groups, dtype, device)
        self.talker = Talker(checkpoint.talker, self.predictor, self.eos_id, max_seq_len, dtype, device)
        self.prompts = PromptBuilder(checkpoint.talker, cfg, checkpoint.tokenizer, device)
        self.speech_tokenizer = checkpoint.speech_tokenizer
        self.speaker_encoder = checkpoint.speaker_encoder  # Base checkpoints only
        self.use_graphs = device.type == "cuda" and not enforce_eager
        self.compile = compile
        if compile:
            compile_steps(self.talker, self.predictor)
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, dict[int, torch.cuda.CUDAGraph]]] = {}
        self._graph_pool: GraphPool | None = None
        self._stream_decoder = None
        self.capture_seconds = 0.0
        """Wall time spent capturing CUDA graphs (and compiling, with ``compile=True``)."""

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cuda", dtype: torch.dtype = torch.bfloat16,
                        max_seq_len: int = 2048, enforce_eager: bool = False, compile: bool = False) -> "Qwen3TTS":
        """Load a Qwen3-TTS 12 Hz checkpoint directory (config.json, model.safetensors, speech_tokenizer/, ...)."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is not a Qwen3-TTS checkpoint directory (no config.json): run ./setup.sh "
                             "to download the models, or point to the folder that holds config.json")
        if max_seq_len < 64:
            raise ValueError(f"max_seq_len={max_seq_len} is too small for any prompt; use at least 64 (default 2048)")
        dev = torch.device(device)
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError("device='cuda' but torch sees no CUDA device: use device='cpu' or fix the driver")
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls only; parity tests switch it off
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True  # the speech decoder's convolutions
        engine = cls(load_checkpoint(path, dev, dtype), dev, dtype, max_seq_len, enforce_eager, compile)
        log.info("loaded %s (%s, %s) on %s, max_seq_len %d, %s", path.name, engine.kind, engine.model_size, dev,
                 max_seq_len, "CUDA graphs" if engine.use_graphs else "eager")
        return engine

    # -- voices and prompts -----------------------------------------------------------------------------------
    @property
    def speakers(self) -> list[str]:
        return self.prompts.speakers()

    @property
    def languages(self) -> list[str]:
        return self.prompts.languages()

    def _require(self, kind: str, what: str) -> None:
        if self.kind != kind:
            raise ValueError(f"{what} needs a {kind} checkpoint, this one is {self.kind}: load a "
                             f"Qwen3-TTS-12Hz-*-{kind.replace('_', ' ').title().replace(' ', '')} model")

    def prompt_custom_voice(self, text: str, speaker: str, language: str = "auto", instruct: str = "",
                            non_streaming_mode: bool = True) -> TalkerPrompt:
        self._require("custom_voice", "prompt_custom_voice")
        if instruct and not takes_instruct(self.model_size):
            log.warning("the 0.6B CustomVoice model has no instruction control; ignoring instruct=%r", instruct)
            instruct = ""
        return self.prompts.build(text, language, speaker=speaker, instruct=instruct,
                                  non_streaming_mode=non_streaming_mode)

    def prompt_voice_design(self, text: str, instruct: str, language: str = "auto",
                            non_streaming_mode: bool = True) -> TalkerPrompt:
        self._require("voice_design", "prompt_voice_design")
        return self.prompts.build(text, language, instruct=instruct, non_streaming_mode=non_streaming_mode)

    def prompt_voice_clone(self, text: str, voice: VoicePrompt, language: str = "auto",
                           non_streaming_mode: bool = False) -> TalkerPrompt:
        self._require("base", "prompt_voice_clone")
        return self.prompts.build(text, language, voice=voice, non_streaming_mode=non_streaming_mode)

    def create_voice_prompt(self, ref_audio, ref_text: str | None = None, xvec_only: bool = False) -> VoicePrompt:
        """Reference audio (path or (np.ndarray, sr)) [+ its transcript] -> reusable ``VoicePrompt``."""
        self._require("base", "create_voice_prompt")
        with torch.no_grad():
            return create_voice_prompt(self.speech_tokenizer, self.speaker_encoder, ref_audio, ref_text, xvec_only)

    # -- decoding ---------------------------------------------------------------------------------------------
    def _frame_budget(self, prompt: TalkerPrompt, max_new_tokens: int | None) -> int:
        """Number of frames to run at most (N - 1 for N new tokens), checked against max_seq_len."""
        room = self.max_seq_len - prompt.length  # free cache slots = frames that fit
        if room < 1:
            raise ValueError(f"the prompt takes {prompt.length} positions but max_seq_len is {self.max_seq_len}: "
                             f"shorten the text (or instruct/reference text) by at least {1 - room} tokens, "
                             "or load the engine with a larger max_seq_len")
        if max_new_tokens is None:
            needed = FRAMES_PER_TEXT_TOKEN * prompt.text_tokens
            if needed > room:  # each text token removed frees one prompt position and needs 8 frames less
                cut = -(-(needed - room) // (FRAMES_PER_TEXT_TOKEN + 1))
                raise ValueError(f"the text ({prompt.text_tokens} tokens) is too long to speak within max_seq_len="
                                 f"{self.max_seq_len}: shorten it by at least {cut} tokens (split the sentence), "
                                 "or load the engine with a larger max_seq_len")
            return min(needed + EXTRA_FRAMES, room)
        if max_new_tokens - 1 > room:
            raise ValueError(f"max_new_tokens={max_new_tokens} does not fit: the prompt takes {prompt.length} of "
                             f"max_seq_len={self.max_seq_len} positions; use max_new_tokens <= {room + 1} or a "
                             f"shorter text (by about {max_new_tokens - 1 - room} tokens)")
        return max(max_new_tokens - 1, 0)

    def _step_functions(self, sampling: SamplingParams) -> tuple[Callable[[], None], dict[int, Callable[[], None]]]:
        """The code predictor step and the talker step per key bucket, as argument-free functions."""
        talker = self.talker
        codes = functools.partial(talker.codes_step, sampling)
        talks = {size: functools.partial(talker.talker_step, sampling, size) for size in talker.key_buckets}
        return codes, talks

    def _frame_step(self, sampling: SamplingParams) -> Callable[[int], None]:
        """The per-frame function of the cache slot the frame writes (a host int): two graph replays on CUDA, or
        the same two steps eagerly. The talker step is the one of the smallest key bucket holding the slot."""
        bucket = self.talker.key_bucket
        if not self.use_graphs:
            codes, talks = self._step_functions(sampling)
            return lambda slot: (codes(), talks[bucket(slot)]())
        key = sampling.graph_key
        if key not in self._graphs:
            if self._graph_pool is None:
                self._graph_pool = GraphPool()
            codes, talks = self._step_functions(sampling)
            with torch.no_grad():  # before any prefill: the warm-up calls only touch state that prefill resets
                self.talker.rewind()
                codes_graph = self._graph_pool.capture(codes)
                talk_graphs = {}
                for size, talk in talks.items():
                    self.talker.rewind()
                    talk_graphs[size] = self._graph_pool.capture(talk)
                self._graphs[key] = (codes_graph, talk_graphs)
            self.capture_seconds = self._graph_pool.capture_seconds
            log.info("captured the frame graphs (%d key buckets) in %.2f s (sampling %s)", len(talks),
                     self.capture_seconds, key)
        codes_graph, talk_graphs = self._graphs[key]
        return lambda slot: (codes_graph.replay(), talk_graphs[bucket(slot)].replay())

    def _frames(self, prompt: TalkerPrompt, sampling: SamplingParams | None, max_new_tokens: int | None,
                chunk_sizes: Iterator[int], cancel: threading.Event | None, suppress_eos: bool) -> Iterator[torch.Tensor]:
        """Yield codes [n, 16] (CPU) chunk by chunk until EOS, the frame budget, or ``cancel``."""
        sampling = sampling or SamplingParams()
        budget = self._frame_budget(prompt, max_new_tokens)
        step = self._frame_step(sampling)
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)  # the default generators: the graph-safe RNG
        min_new = self.max_seq_len + 1 if suppress_eos else TALKER_MIN_NEW_TOKENS
        with torch.no_grad():
            self.talker.prefill(prompt.embeds.to(self.dtype), prompt.trailing.to(self.dtype),
                                prompt.tts_pad.to(self.dtype), sampling, min_new)
            done = 0
            for size in chunk_sizes:
                n = min(size, budget - done)
                if n <= 0 or (cancel is not None and cancel.is_set()):
                    return
                for i in range(n):
                    step(prompt.length + done + i)  # the cache slot this frame's talker step writes
                codes = self.talker.history[done : done + n].cpu()  # [n, 16]; the one host sync per chunk
                ends = (codes[:, 0] == self.eos_id).nonzero()
                if len(ends):
                    yield codes[: int(ends[0, 0])]
                    return
                yield codes
                done += n

    def generate_codes(self, prompt: TalkerPrompt, sampling: SamplingParams | None = None,
                       max_new_tokens: int | None = None, suppress_eos: bool = False) -> torch.Tensor:
        """All codes of one utterance, LongTensor [T, 16] on the CPU (EOS frame excluded)."""
        chunks = list(self._frames(prompt, sampling, max_new_tokens, _repeat(CODES_CHUNK), None, suppress_eos))
        return torch.cat(chunks) if chunks else torch.zeros(0, 16, dtype=torch.long)

    def decode(self, codes: torch.Tensor, context_codes: torch.Tensor | None = None) -> np.ndarray:
        """One-shot decode of codes [T, 16] -> float32 [T * 1920] (``context_codes`` decoded first, then cut off)."""
        if codes.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        full = codes if context_codes is None else torch.cat((context_codes.to(codes.device), codes))
        wav = self.speech_tokenizer.decode(full)
        return wav if context_codes is None else wav[context_codes.shape[0] * FRAME_SAMPLES :]

    def stream(self, prompt: TalkerPrompt, sampling: SamplingParams | None = None, chunk_size: int = CHUNK_SIZE,
               first_chunk_size: int = FIRST_CHUNK_SIZE, max_new_tokens: int | None = None,
               cancel: threading.Event | None = None, suppress_eos: bool = False) -> Iterator[np.ndarray]:
        """Yield float32 24 kHz audio every chunk of frames (1920 samples per frame), exact w.r.t. ``decode``."""
        if chunk_size < 1 or first_chunk_size < 1:
            raise ValueError(f"chunk sizes must be >= 1 frame, got chunk_size={chunk_size}, "
                             f"first_chunk_size={first_chunk_size}")
        self._warn_uncaptured((first_chunk_size, chunk_size))
        decoder = self._decoder()
        decoder.reset(context_codes=prompt.context_codes)
        sizes = _first_then(first_chunk_size, chunk_size)
        for codes in self._frames(prompt, sampling, max_new_tokens, sizes, cancel, suppress_eos):
            if len(codes):
                audio = decoder.decode(codes.to(self.speech_tokenizer.device))
                if isinstance(audio, torch.Tensor):
                    audio = audio.detach().float().cpu().numpy()
                yield np.asarray(audio, dtype=np.float32).reshape(-1)

    def _decoder(self):
        if self._stream_decoder is None:
            from s2s.qwen3_tts.codec_stream import StreamingCodecDecoder

            self._stream_decoder = StreamingCodecDecoder(self.speech_tokenizer.decoder)
            if self.use_graphs:
                from s2s.qwen3_tts.codec_graphs import GraphedCodecDecoder

                self._stream_decoder = GraphedCodecDecoder(self._stream_decoder)
        return self._stream_decoder

    def _warn_uncaptured(self, chunk_sizes: tuple[int, ...]) -> None:
        """One warning per chunk size that streaming asks for but warm-up did not capture a decoder graph for."""
        if not self.use_graphs:
            return
        for size in sorted(set(chunk_sizes) - self.captured_chunk_sizes - self._warned_chunk_sizes):
            self._warned_chunk_sizes.add(size)
            log.warning("chunk size %d was not captured at warm-up (captured: %s): its chunks are decoded without "
                        "a CUDA graph, several times slower; pass it to warmup(chunk_sizes=...) or use a captured "
                        "size (tts.chunk_size / tts.first_chunk_size)", size, sorted(self.captured_chunk_sizes))

    def warmup(self, sampling: SamplingParams | None = None,
               chunk_sizes: tuple[int, ...] = (FIRST_CHUNK_SIZE, CHUNK_SIZE)) -> None:
        """Capture the graphs for ``sampling`` (CUDA) and run a short dummy utterance through every stage, the
        streaming decoder with each of ``chunk_sizes`` (cuDNN picks its kernels per shape on first use)."""
        hidden = self.talker.w.codec_embedding.shape[1]
        zeros = torch.zeros(1, 8, hidden, dtype=self.dtype, device=self.device)
        dummy = TalkerPrompt(zeros, zeros[:, :1], zeros[:, :1], text_tokens=1)
        codes = self.generate_codes(dummy, sampling, max_new_tokens=max(chunk_sizes) + 1, suppress_eos=True)
        self.decode(codes)
        decoder = self._decoder()
        decoder.reset()
        for size in chunk_sizes:
            decoder.decode(codes[:size].to(self.speech_tokenizer.device))
        if self.use_graphs:
            decoder.capture(tuple(chunk_sizes))
            self.captured_chunk_sizes |= set(chunk_sizes)
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def _repeat(size: int) -> Iterator[int]:
    while True:
        yield size


def _first_then(first: int, rest: int) -> Iterator[int]:
    yield first
    yield from _repeat(rest)
