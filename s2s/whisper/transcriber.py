"""Audio -> text with the torch Whisper (``s2s.whisper.model``), called as faster-whisper's ``WhisperModel``.

As faster-whisper does it: the log-Mel features of the audio (80 or 128 bins, 25 ms Hann windows every 10 ms; the
log is clipped 8 below its maximum and scaled) padded with zeros to the model's 30 s window; the prompt
``<|startoftranscript|>`` (then the language and ``<|transcribe|>`` for a multilingual model) and
``<|notimestamps|>``, after ``<|startofprev|>`` and an initial prompt's tokens if one is given; the non-speech
tokens of the model's config suppressed, and a blank or the end at the first step; a window the model rates as
no speech (probability of ``<|nospeech|>`` over 0.6, mean log-probability under -1) gives no text. Decoding is
greedy: faster-whisper's beam search and temperature fallback are not repeated here. Audio longer than one window
is transcribed a window at a time.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from s2s.whisper.ct2_weights import read_ct2
from s2s.whisper.model import Whisper

log = logging.getLogger(__name__)

RATE = 16000
N_FFT, HOP = 400, 160
WINDOW_FRAMES = 3000
"""Feature frames in the model's 30 s window."""
NO_SPEECH_PROB, LOW_LOGPROB = 0.6, -1.0
MAX_NEW_TOKENS = 224


@dataclass(frozen=True)
class Segment:
    text: str
    start: float
    end: float
    no_speech_prob: float
    avg_logprob: float


@dataclass(frozen=True)
class Info:
    language: str
    language_probability: float
    duration: float


class TorchWhisper:
    """``transcribe(audio, language=None, initial_prompt=None, **ignored) -> (segments, info)``."""

    def __init__(self, folder: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        folder = Path(folder)
        spec, weights = read_ct2(folder)
        if spec != "WhisperSpec":
            raise ValueError(f"{folder} holds a CTranslate2 {spec}, not a Whisper model")
        self.device = torch.device(device)
        self.dtype = dtype
        self.model = Whisper(weights).to(self.device, dtype).eval()
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
        token = self.tokenizer.token_to_id
        self.sot, self.eot = token("<|startoftranscript|>"), token("<|endoftext|>")
        self.no_timestamps = token("<|notimestamps|>")
        self.no_speech = token("<|nospeech|>") or token("<|nocaptions|>")
        self.multilingual = self.model.embedding.weight.shape[0] >= 51865
        self.languages = {self.tokenizer.id_to_token(i)[2:-2]: i for i in config.get("lang_ids", [])}
        specials = [token(t) for t in ("<|transcribe|>", "<|translate|>", "<|startofprev|>", "<|startoflm|>")]
        vocab = self.model.embedding.weight.shape[0]
        suppress = torch.zeros(vocab, dtype=torch.bool)
        for i in [*config.get("suppress_ids", []), *specials, self.sot, self.no_speech]:
            if i is not None and 0 <= i < vocab:
                suppress[i] = True
        suppress[self.no_timestamps:] = True  # the timestamp tokens: transcripts here have none
        self.suppress = suppress.to(self.device)
        self.suppress_first = self.suppress.clone()
        for i in [*config.get("suppress_ids_begin", []), self.eot, *self.tokenizer.encode(" ").ids]:
            self.suppress_first[i] = True
        self.window = torch.hann_window(N_FFT, periodic=True, device=self.device)
        from faster_whisper.feature_extractor import FeatureExtractor  # its filterbank, so the features match

        filters = FeatureExtractor.get_mel_filters(RATE, N_FFT, n_mels=self.model.n_mels).astype(np.float32)
        self.filters = torch.from_numpy(filters).to(self.device)  # [n_mels, N_FFT // 2 + 1]

    def features(self, audio: np.ndarray) -> torch.Tensor:
        """[n_mels, frames] log-Mel features of 16 kHz float32 audio (computed on the model's device)."""
        wave = torch.from_numpy(np.pad(np.asarray(audio, dtype=np.float32), (0, HOP))).to(self.device)
        spectrum = torch.stft(wave, N_FFT, HOP, window=self.window, center=True, pad_mode="reflect",
                              return_complex=True)[:, :-1].abs() ** 2  # [bins, frames]
        log_spec = torch.clamp(self.filters @ spectrum, min=1e-10).log10()
        log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
        return (log_spec + 4.0) / 4.0

    @torch.inference_mode()
    def transcribe(self, audio: np.ndarray, language: str | None = None, initial_prompt: str | None = None,
                   **ignored: object) -> tuple[list[Segment], Info]:
        """Segments (one per 30 s window that holds speech) and the language of 16 kHz mono float32 audio."""
        features = self.features(audio)
        duration = len(audio) / RATE
        windows = max(1, math.ceil(features.shape[1] / WINDOW_FRAMES))
        segments, detected = [], ("en", 1.0)
        for w in range(windows):
            chunk = features[:, w * WINDOW_FRAMES:(w + 1) * WINDOW_FRAMES]
            chunk = torch.nn.functional.pad(chunk, (0, WINDOW_FRAMES - chunk.shape[1]))  # zeros, as faster-whisper
            audio_states = self.model.encode(chunk[None].to(self.dtype))  # [1, 1500, D]
            if self.multilingual and language is None and w == 0:
                detected = self._language(audio_states)
            lang = language or detected[0]
            segment = self._decode(audio_states, lang, initial_prompt, w * 30.0, min(duration, (w + 1) * 30.0))
            if segment is not None:
                segments.append(segment)
        return segments, Info(language=language or detected[0], language_probability=detected[1],
                              duration=duration)

    def _language(self, audio_states: torch.Tensor) -> tuple[str, float]:
        logits = self.model.decode(torch.tensor([[self.sot]], device=self.device), self.model.start(audio_states))
        ids = torch.tensor(list(self.languages.values()), device=self.device)
        probs = logits[0, -1, ids].float().softmax(-1)
        best = int(probs.argmax())
        return list(self.languages)[best], float(probs[best])

    def _prompt(self, language: str, initial_prompt: str | None) -> list[int]:
        prompt = [self.sot]
        if self.multilingual:
            prompt += [self.languages.get(language, self.languages.get("en")), self.tokenizer.token_to_id(
                "<|transcribe|>")]
        prompt.append(self.no_timestamps)
        if initial_prompt:
            previous = self.tokenizer.encode(" " + initial_prompt.strip()).ids[-(self.model.max_tokens // 2 - 1):]
            prompt = [self.tokenizer.token_to_id("<|startofprev|>"), *previous, *prompt]
        return prompt

    def _decode(self, audio_states: torch.Tensor, language: str, initial_prompt: str | None, start: float,
                end: float) -> Segment | None:
        prompt = self._prompt(language, initial_prompt)
        sot_at = prompt.index(self.sot)
        cache = self.model.start(audio_states)
        logits = self.model.decode(torch.tensor([prompt], device=self.device), cache)[0].float()  # [T, vocab]
        no_speech = float(logits[sot_at].softmax(-1)[self.no_speech])
        step, tokens, logprob_sum = logits[-1], [], 0.0
        budget = min(MAX_NEW_TOKENS, self.model.max_tokens - len(prompt))
        for k in range(budget):
            step = step.masked_fill(self.suppress_first if k == 0 else self.suppress, -math.inf)
            logprobs = step.log_softmax(-1)
            token = int(logprobs.argmax())
            logprob_sum += float(logprobs[token])
            if token == self.eot:
                break
            tokens.append(token)
            step = self.model.decode(torch.tensor([[token]], device=self.device), cache)[0, -1].float()
        avg_logprob = logprob_sum / (len(tokens) + 1)
        if no_speech > NO_SPEECH_PROB and avg_logprob <= LOW_LOGPROB:
            log.debug("torch Whisper: no speech (%.2f) in %.1f-%.1f s", no_speech, start, end)
            return None
        text = self.tokenizer.decode(tokens)
        return Segment(text=text, start=start, end=end, no_speech_prob=no_speech, avg_logprob=avg_logprob)
