"""``RowScheduler``: continuous batching over a ``BatchDecoder``: requests join between frames and leave alone.

    rows = RowScheduler(engine, BatchDecoder(engine, max_batch=8))
    rows.submit(RowRequest(prompt, SamplingParams()))      # waits for a free row (FIFO)
    while rows.busy:
        for event in rows.step():                           # one frame for every request in a row
            ...                                             # event.request, event.audio / event.codes, event.end

One ``step()``: requests whose ``cancel`` is set leave (waiting or running) -> waiting requests take the free rows,
lowest first, each with its eager prefill -> one frame step of the batch bucket that holds the highest row in use,
with the key bucket that holds the furthest row -> each row whose chunk is complete reads its codes (the host
sync; it is also the EOS check, as the single-stream engine) and, with ``audio``, decodes them with its own stateful
codec decoder -> rows at EOS or at their frame budget leave. A row's frames are the single-stream engine's:
``_frame_budget``, the EOS cut and the chunk sizes (first chunk, then chunk) are the same, so a request's events
equal what ``Qwen3TTS.stream``/``_frames`` yield for it. The object owns no thread: a caller (the server's loop)
drives ``step()``; ``submit`` and a request's ``cancel`` may come from other threads.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from s2s.qwen3_tts.batch import BatchDecoder
from s2s.qwen3_tts.codec_worker import CodecWorker
from s2s.qwen3_tts.options import CHUNK_SIZE, FIRST_CHUNK_SIZE, SamplingParams
from s2s.qwen3_tts.prompt import TalkerPrompt
from s2s.qwen3_tts.sampling import TALKER_MIN_NEW_TOKENS

log = logging.getLogger(__name__)


@dataclass(eq=False)
class RowRequest:
    """One utterance for the batch. ``prompt`` may be a function that builds it (run on the scheduler's thread at
    admission; a ValueError it raises ends the request with that error)."""

    prompt: TalkerPrompt | Callable[[], TalkerPrompt]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_new_tokens: int | None = None
    suppress_eos: bool = False
    chunk_size: int = CHUNK_SIZE
    first_chunk_size: int = FIRST_CHUNK_SIZE
    cancel: threading.Event = field(default_factory=threading.Event)
    tag: object = None
    """The caller's handle (the server's job)."""

    def __post_init__(self) -> None:
        if self.chunk_size < 1 or self.first_chunk_size < 1:
            raise ValueError(f"chunk sizes must be >= 1 frame, got chunk_size={self.chunk_size}, "
                             f"first_chunk_size={self.first_chunk_size}")


@dataclass
class RowEvent:
    """What one step produced for one request: a chunk (``codes`` [n, 16], and ``audio`` float32 [n * 1920] with
    audio decoding on), its end, or its error (which is also its end)."""

    request: RowRequest
    codes: torch.Tensor | None = None
    audio: np.ndarray | None = None
    end: bool = False
    error: Exception | None = None


@dataclass
class _Row:
    request: RowRequest
    prompt: TalkerPrompt
    budget: int
    """Frames the row runs at most (``Qwen3TTS._frame_budget``)."""
    decoder: object | None
    stepped: int = 0
    """Frames computed so far."""
    read: int = 0
    """Frames handed out so far."""

    @property
    def chunk(self) -> int:
        return self.request.first_chunk_size if self.read == 0 else self.request.chunk_size


class RowScheduler:
    """Owns the rows of a ``BatchDecoder``: admission, frame steps, per-row chunks, EOS, budget and cancellation.

    ``audio=True`` decodes each row's chunks with its own streaming codec decoder (``codec_decoder(row)`` builds
    one per row slot, on first use; default: the exact ``StreamingCodecDecoder``). Chunks, resets and ends go
    through a ``CodecWorker``: with ``overlap_audio`` on its own thread and CUDA stream, so decoding overlaps the
    next frames (events then come a step or more later); without, at once in ``step``."""

    def __init__(self, engine, decoder: BatchDecoder, audio: bool = True,
                 codec_decoder: Callable[[int], object] | None = None, overlap_audio: bool = False) -> None:
        self.engine = engine
        self.decoder = decoder
        self.audio = audio
        self._codec_decoder = codec_decoder or self._streaming_decoder
        self._codecs: dict[int, object] = {}
        self._worker = CodecWorker(decoder.device, self._failed, threaded=overlap_audio)
        self._rows: dict[int, _Row] = {}
        self._waiting: collections.deque[RowRequest] = collections.deque()
        self._lock = threading.Lock()
        self.frames = 0
        """Frame steps run (each serves every row in use)."""

    # -- the caller's side ----------------------------------------------------------------------------------------
    def submit(self, request: RowRequest, first: bool = False) -> None:
        """Queue ``request`` for a row (``first``: ahead of the others, for the next piece of a running text)."""
        with self._lock:
            if first:
                self._waiting.appendleft(request)
            else:
                self._waiting.append(request)

    @property
    def busy(self) -> bool:
        """Whether any request waits or runs, or has events still to come."""
        with self._lock:
            return bool(self._rows or self._waiting or self._worker.pending)

    @property
    def running(self) -> int:
        return len(self._rows)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    # -- one step -------------------------------------------------------------------------------------------------
    def step(self) -> list[RowEvent]:
        """Admit, run one frame for the rows in use, hand out complete chunks and ends (see the module docstring):
        the events finished since the last step."""
        self._drop_cancelled()
        self._admit()
        if self._rows:
            highest = max(self._rows)
            furthest = max(r.prompt.length + r.stepped for r in self._rows.values())  # the cache slot written now
            self.decoder.frame(self.decoder.bucket(highest + 1), self.decoder.key_bucket(furthest))
            self.frames += 1
            for index, row in list(self._rows.items()):
                row.stepped += 1
                if row.stepped - row.read >= row.chunk or row.stepped >= row.budget:
                    self._hand_out(index, row)
        return self._worker.take(wait=not self._rows)  # no frame to run: wait for the decoding still to come

    def _emit(self, request: RowRequest, task: Callable[[], RowEvent | None], last: bool = False,
              after_default_stream: bool = False) -> None:
        self._worker.submit(request, task, last, after_default_stream)

    def _end(self, request: RowRequest, error: Exception | None = None) -> None:
        self._emit(request, lambda: RowEvent(request, end=True, error=error), last=True)

    def _failed(self, request: RowRequest, exc: Exception) -> RowEvent:
        """A codec task of ``request`` raised: the request ends with the error (its row leaves at the next step)."""
        request.cancel.set()
        return RowEvent(request, end=True, error=exc)

    def _drop_cancelled(self) -> None:
        with self._lock:
            cancelled = [r for r in self._waiting if r.cancel.is_set()]
            for request in cancelled:
                self._waiting.remove(request)
        for request in cancelled:
            self._end(request)
        for index, row in list(self._rows.items()):
            if row.request.cancel.is_set():
                self._leave(index)

    def _admit(self) -> None:
        free = [i for i in range(self.decoder.max_batch) if i not in self._rows]
        while free:
            with self._lock:
                if not self._waiting:
                    return
                request = self._waiting.popleft()
            try:
                row = self._start(free[0], request)
            except ValueError as exc:  # this request cannot be spoken; the others carry on
                self._end(request, exc)
                continue
            if row is None:  # a budget of 0 frames: nothing to speak
                self._end(request)
                continue
            self._rows[free.pop(0)] = row

    def _start(self, index: int, request: RowRequest) -> _Row | None:
        """Prefill ``request`` into row ``index`` (None for a budget of 0 frames); ValueError for one that cannot
        be spoken (too long, sampling values a batch does not take)."""
        prompt = request.prompt() if callable(request.prompt) else request.prompt
        budget = self.engine._frame_budget(prompt, request.max_new_tokens)
        self.decoder.sampling.check(request.sampling)
        if budget == 0:
            return None
        min_new = self.decoder.max_seq_len + 1 if request.suppress_eos else TALKER_MIN_NEW_TOKENS
        self.decoder.prefill(index, prompt, request.sampling, min_new)
        codec = None
        if self.audio:
            codec = self._codecs.get(index) or self._codecs.setdefault(index, self._codec_decoder(index))
            context = prompt.context_codes
            self._emit(request, lambda: codec.reset(context_codes=context), after_default_stream=context is not None)
        return _Row(request, prompt, budget, codec)

    def _hand_out(self, index: int, row: _Row) -> None:
        codes = self.decoder.history[index, row.read : row.stepped].cpu()  # [n, 16]; the host sync (EOS check)
        ends = (codes[:, 0] == self.decoder.eos_id).nonzero()
        done = bool(len(ends)) or row.stepped >= row.budget
        if len(ends):
            codes = codes[: int(ends[0, 0])]
        row.read = row.stepped
        if len(codes):
            self._emit(row.request, lambda: RowEvent(row.request, codes=codes, audio=_decode(row.decoder, codes)))
        if done:
            self._leave(index)

    def _leave(self, index: int) -> None:
        row = self._rows.pop(index)
        self.decoder.release(index)
        self._end(row.request)

    def close(self) -> None:
        """End every request (waiting and running) with an end event on the next ``step``s; ``stop`` after them."""
        with self._lock:
            requests = [*self._waiting, *(row.request for row in self._rows.values())]
        for request in requests:
            request.cancel.set()

    def stop(self) -> None:
        """End the codec worker's thread (after ``close`` and the steps that hand out the ends)."""
        self._worker.close()

    def warmup(self, chunk_sizes: tuple[int, ...] = (FIRST_CHUNK_SIZE, CHUNK_SIZE)) -> None:
        """Build every row's codec decoder now and, on CUDA, capture its graphs for ``chunk_sizes``, so that no
        request waits for that (a chunk of another size is decoded eagerly, as in ``Qwen3TTS.stream``)."""
        for index in range(self.decoder.max_batch):
            codec = self._codecs.get(index) or self._codecs.setdefault(index, self._codec_decoder(index))
            capture = getattr(codec, "capture", None)
            if capture is not None:
                capture(tuple(chunk_sizes))

    def _streaming_decoder(self, index: int):
        """Row ``index``'s own exact streaming codec decoder (its state is the row's), graphed on CUDA."""
        from s2s.qwen3_tts.codec_stream import StreamingCodecDecoder

        decoder = StreamingCodecDecoder(self.engine.speech_tokenizer)  # it finds the codec decoder inside
        if not self.decoder.use_graphs:
            return decoder
        from s2s.qwen3_tts.codec_graphs import GraphedCodecDecoder

        return GraphedCodecDecoder(decoder)


def _decode(codec, codes: torch.Tensor) -> np.ndarray | None:
    """Audio of ``codes`` [n, 16] from a row's streaming decoder (None without audio): float32 [n * 1920]."""
    if codec is None:
        return None
    wav = codec.decode(codes)  # the decoder moves them to its device
    if isinstance(wav, torch.Tensor):
        wav = wav.detach().float().cpu().numpy()
    return np.asarray(wav, dtype=np.float32).reshape(-1)
