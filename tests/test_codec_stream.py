"""The streaming 12 Hz codec decoder equals the reference decoder's one-shot forward over all frames.

Tolerances: float64 streams agree with the one-shot forward to 1.5e-8-3e-8 max abs (the reference RMSNorm rounds
through fp32), asserted at 1e-6; a decoder with only a fixed 72-frame left window misses by more than that (checked
below, so the tolerance can catch it). float32 streams (max abs, 150-160 frames, CPU): 6e-7 on the tiny decoder and
9.2e-7 on the released config with random weights, asserted at 1e-4 (also on an H100 with TF32 off).
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from s2s.checkpoint_builder.build import build_checkpoint, build_speech_tokenizer, speech_tokenizer_config
from s2s.qwen3_tts.codec_stream import StreamingCodecDecoder, find_codec_decoder

torch.set_num_threads(1)
pytestmark = pytest.mark.reference  # the reference decoder's one-shot forward is the yardstick
FRAME = 1920
FRAMES = 160  # longer than the 72-frame attention window, and than the tiny decoder's 2-layer reach
EXACT = 1e-6
FLOAT32 = 1e-4


def _codec(size: str, seed: int = 0, **decoder_overrides) -> torch.nn.Module:
    """A random speech tokenizer whose attention and ConvNeXt branches matter: LayerScale and ConvNeXt gamma are set
    to 1 (the upstream init, 0.01 and 1e-6, leaves both branches almost silent; trained weights are not)."""
    config = speech_tokenizer_config(size)
    config["decoder_config"].update(decoder_overrides)
    torch.manual_seed(seed)
    codec = build_speech_tokenizer(config)
    with torch.no_grad():
        for module in codec.decoder.modules():
            if type(module).__name__.endswith("LayerScale"):
                module.scale.fill_(1.0)
            if type(module).__name__.endswith("ConvNeXtBlock"):
                module.gamma.fill_(1.0)
    return codec


def _one_shot(codec: torch.nn.Module, codes: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return codec.decoder(codes.T[None])[0, 0]  # [1, 16, T] -> [T * 1920]


def _stream(decoder: StreamingCodecDecoder, codes: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Decode in chunks of ``sizes`` (the last size repeats)."""
    pieces, start = [], 0
    while start < len(codes):
        size = sizes[min(len(pieces), len(sizes) - 1)]
        piece = decoder.decode(codes[start : start + size])
        assert piece.shape == (min(size, len(codes) - start) * FRAME,) and piece.dtype == torch.float32
        pieces.append(piece)
        start += size
    return torch.cat(pieces)


def _max_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


@pytest.fixture(scope="module")
def tiny64():
    codec = _codec("tiny").double()
    codes = torch.randint(0, 2048, (FRAMES, 16), generator=torch.Generator().manual_seed(1))
    return codec, codes, _one_shot(codec, codes)


@pytest.mark.parametrize("sizes", [[1], [2], [4], [7], [2, 9]], ids=["1", "2", "4", "7", "2-then-9"])
def test_stream_equals_one_shot_in_float64(tiny64, sizes):
    codec, codes, reference = tiny64
    assert float(reference.std()) > 0.05  # real audio, not a silent or saturated decoder
    stream = StreamingCodecDecoder(codec)
    assert _max_error(_stream(stream, codes, sizes), reference) < EXACT
    assert stream.frames_decoded == FRAMES


def test_context_codes_are_decoded_into_the_state_and_dropped(tiny64):
    codec, codes, reference = tiny64
    stream = StreamingCodecDecoder(codec)
    stream.decode(codes[:30])  # an earlier utterance: reset must forget it
    stream.reset(context_codes=codes[:50])
    assert _max_error(_stream(stream, codes[50:], [3, 8]), reference[50 * FRAME :]) < EXACT
    stream.reset()
    assert _max_error(_stream(stream, codes[:20], [5]), reference[: 20 * FRAME]) < EXACT


def test_a_fixed_72_frame_window_is_not_exact(tiny64):
    # What the stateful decoder avoids: re-decoding the last frames with 72 frames of left context.
    codec, codes, reference = tiny64
    windowed = _one_shot(codec, codes[FRAMES - 10 - 72 :])[72 * FRAME :]
    assert _max_error(windowed, reference[-10 * FRAME :]) > 10 * EXACT


def test_stream_matches_one_shot_in_float32():
    codec = _codec("tiny", seed=2)
    codes = torch.randint(0, 2048, (FRAMES, 16), generator=torch.Generator().manual_seed(3))
    reference = _one_shot(codec, codes)
    stream = StreamingCodecDecoder(codec)
    assert _max_error(_stream(stream, codes, [1, 4]), reference) < FLOAT32


def test_each_chunk_runs_the_same_ops_without_host_sync(tiny64):
    codec, codes, _ = tiny64
    stream = StreamingCodecDecoder(codec)

    class OpLog(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    logs = []
    for start in (0, 4, 100):  # empty cache, partly filled, full window
        with OpLog() as log:
            stream.decode(codes[start : start + 4])
        logs.append(log.ops)
    assert logs[0] == logs[1] == logs[2]
    assert not [op for op in logs[0] if "_local_scalar_dense" in op or "nonzero" in op]


def test_finds_the_decoder_in_a_loaded_checkpoint_and_matches_its_decode(tmp_path):
    from qwen_tts import Qwen3TTSModel

    tts = Qwen3TTSModel.from_pretrained(str(build_checkpoint(tmp_path / "ck", size="tiny")), device_map="cpu",
                                        dtype=torch.float32)
    codec = tts.model.speech_tokenizer.model
    assert find_codec_decoder(tts) is codec.decoder is find_codec_decoder(codec)
    codes = torch.randint(0, 2048, (24, 16), generator=torch.Generator().manual_seed(4))
    (reference,), rate = tts.model.speech_tokenizer.decode([{"audio_codes": codes}])
    stream = StreamingCodecDecoder(tts)
    assert rate == 24000 and stream.samples_per_frame == FRAME
    assert _max_error(_stream(stream, codes, [4]), torch.from_numpy(reference)) < FLOAT32
    with pytest.raises(ValueError, match="frames, 16"):
        stream.decode(codes[:, :8])
    with pytest.raises(TypeError, match="no 12 Hz codec decoder"):
        StreamingCodecDecoder(torch.nn.Linear(2, 2))


@pytest.mark.slow
def test_stream_equals_one_shot_with_the_released_transformer():
    # The released decoder config (8 layers x 512, 16 heads, window 72, latent 1024) with narrow conv stages
    # (decoder_dim 96 instead of 1536) to keep CPU time low; float64, 150 frames.
    codec = _codec("0.6b", seed=5, decoder_dim=96).double()
    codes = torch.randint(0, 2048, (150, 16), generator=torch.Generator().manual_seed(6))
    reference = _one_shot(codec, codes)
    stream = StreamingCodecDecoder(codec)
    assert _max_error(_stream(stream, codes, [3, 7]), reference) < EXACT


@pytest.mark.cuda
def test_cuda_graph_replay_equals_eager_with_the_released_decoder():
    # The released config (random weights) in fp32 on the GPU, TF32 off: the eager stream against the one-shot
    # forward, then one decode of 4 frames captured as a CUDA graph and replayed chunk after chunk.
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    codec = _codec("0.6b", seed=7).cuda()
    codes = torch.randint(0, 2048, (152, 16), generator=torch.Generator().manual_seed(8)).cuda()
    reference = _one_shot(codec, codes)
    stream = StreamingCodecDecoder(codec)
    eager = _stream(stream, codes, [4])
    assert _max_error(eager, reference) < FLOAT32

    chunk = codes[:4].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        stream.decode(chunk)  # warm-up before capture (cuDNN/cuBLAS handles, allocator)
    torch.cuda.current_stream().wait_stream(side)
    stream.reset()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = stream.decode(chunk)  # recorded, not run: the state is still the reset one
    pieces = []
    for start in range(0, len(codes), 4):
        chunk.copy_(codes[start : start + 4])
        graph.replay()
        pieces.append(out.clone())
    assert _max_error(torch.cat(pieces), eager) < 1e-5


@pytest.mark.cuda
def test_graphed_decoder_equals_the_eager_stream_with_context_and_mixed_chunk_sizes():
    # Graphs for chunks of 2 and 4 frames; the 1-frame tail and the voice-clone context run eagerly on the same state.
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from s2s.qwen3_tts.codec_graphs import GraphedCodecDecoder

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    codec = _codec("0.6b", seed=3).cuda()
    codes = torch.randint(0, 2048, (161, 16), generator=torch.Generator().manual_seed(4)).cuda()
    context, rest = codes[:30], codes[30:]
    eager = StreamingCodecDecoder(codec)
    eager.reset(context_codes=context)
    expected = _stream(eager, rest, [2, 4])
    graphed = GraphedCodecDecoder(StreamingCodecDecoder(codec))
    graphed.capture((2, 4))
    for _ in range(2):  # a second utterance reuses the graphs after reset
        graphed.reset(context_codes=context)
        assert _max_error(_stream(graphed, rest, [2, 4]), expected) < 1e-5
        assert graphed.frames_decoded == len(codes)
