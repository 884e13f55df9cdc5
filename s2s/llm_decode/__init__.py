"""A transformers chat model's decode on static buffers and CUDA graphs (the LLM stage's fast path).

``StaticDecoder`` (decoder.py) runs Llama/SmolLM, Mistral, Qwen2/2.5 and Qwen3 models with the layer code of the
Qwen3-TTS engine (s2s.qwen3_tts.layers): a static K/V cache, the one-token forward captured in a CUDA graph per key
bucket, sampling on the device. ``weights.unsupported`` names what keeps another model on the transformers loop.
"""

from s2s.llm_decode.decoder import StaticDecoder
from s2s.llm_decode.weights import unsupported

__all__ = ["StaticDecoder", "unsupported"]
