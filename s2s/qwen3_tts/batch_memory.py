"""Device memory of batched decoding's row slots, from the model shapes alone (torch-free: ``s2s check`` shows it).

One row slot of ``batch.BatchDecoder`` holds, at max_seq_len L and the model dtype (2 bytes for bf16):
  talker K/V        layers x L x 2 Hkv x d        (28 x L x 16 x 128: 224 MiB at L = 2048, both sizes)
  trailing rows     (L + 1) x D_talker
  mask              L
  code history      L x 16 int64
  predictor rows    layers_p x 16 x (2 Hq + 3 Hkv) x d_p     (raw q, k, v; normed and rotated q, k)
  sampling state    V bool + 16 x k fp32 noise (a few KiB)
All slots are allocated when the decoder is built (``max_batch`` of them), so the figure is exact up to allocator
rounding. Each row's streaming codec decoder (its own state and codebook tables) comes on top, as do the weights
and the single-stream engine the server also holds.
"""

from __future__ import annotations

from collections.abc import Mapping

N_CODES = 16
"""Codebooks per frame (codebook 0 from the talker, 15 from the code predictor)."""
LONG_BYTES = 8


def row_slot_bytes(talker: Mapping, predictor: Mapping, max_seq_len: int, dtype_bytes: int = 2,
                   top_k: int = 50) -> int:
    """Bytes of one row slot for a checkpoint's ``talker_config`` and its ``code_predictor_config`` (config.json
    keys)."""
    L = max_seq_len
    kv = talker["num_hidden_layers"] * L * 2 * talker["num_key_value_heads"] * talker["head_dim"] * dtype_bytes
    trailing = (L + 1) * talker["hidden_size"] * dtype_bytes
    mask = L * dtype_bytes
    history = L * N_CODES * LONG_BYTES
    heads = predictor["num_attention_heads"] + 2 * predictor["num_key_value_heads"]
    qk_heads = predictor["num_attention_heads"] + predictor["num_key_value_heads"]
    predictor_rows = predictor["num_hidden_layers"] * N_CODES * (heads + qk_heads) * predictor["head_dim"] * dtype_bytes
    sampling = talker.get("vocab_size", 3072) + N_CODES * top_k * 4
    return kv + trailing + mask + history + predictor_rows + sampling


def table(shapes: Mapping[str, tuple[Mapping, Mapping]], max_seq_len: int, batches: tuple[int, ...] = (1, 4, 8, 16),
          dtype_bytes: int = 2) -> list[str]:
    """Lines "size: per row X MiB; B=1 ..., B=4 ... GiB" for ``shapes`` {size: (talker, predictor)}."""
    lines = []
    for size, (talker, predictor) in shapes.items():
        row = row_slot_bytes(talker, predictor, max_seq_len, dtype_bytes)
        cells = ", ".join(f"B={b}: {b * row / 2**30:.2f} GiB" for b in batches)
        lines.append(f"{size}: {row / 2**20:.0f} MiB per row slot at max_seq_len {max_seq_len}; {cells}")
    return lines
