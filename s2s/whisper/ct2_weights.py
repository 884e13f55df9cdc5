"""The weights of a CTranslate2 model folder (``model.bin``, format version 5 or 6) as numpy arrays.

The file: a uint32 format version, the spec name and revision, then each variable as its name, rank, dims, data
type and bytes, then aliases (name -> variable). Strings are a uint16 length and the bytes with a closing NUL.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
"""CTranslate2's data type codes (bfloat16, code 5, is not read here)."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return value

    def text(self) -> str:
        length = self.take("<H")
        raw = self.data[self.at:self.at + length]
        self.at += length
        return raw.rstrip(b"\0").decode()

    def raw(self, n: int) -> bytes:
        raw = self.data[self.at:self.at + n]
        if len(raw) != n:
            raise ValueError("the file ends inside a variable")
        self.at += n
        return raw


def read_ct2(folder: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """(spec name, e.g. "WhisperSpec"; variable name -> array, aliases resolved) of ``folder/model.bin``."""
    path = Path(folder) / "model.bin"
    reader = _Reader(path.read_bytes())
    try:
        version = reader.take("<I")
        if version not in (5, 6):
            raise ValueError(f"format version {version} (5 or 6 are read)")
        spec = reader.text()
        reader.take("<I")  # spec revision
        weights = {}
        for _ in range(reader.take("<I")):
            name = reader.text()
            dims = [reader.take("<I") for _ in range(reader.take("<B"))]
            code = reader.take("<B")
            data = reader.raw(reader.take("<I"))
            if code not in DTYPES:
                raise ValueError(f"{name} has data type code {code}, which is not read here")
            weights[name] = np.frombuffer(data, dtype=DTYPES[code]).reshape(dims)
        for _ in range(reader.take("<I")):
            alias, target = reader.text(), reader.text()
            weights[alias] = weights[target]
    except (struct.error, ValueError) as exc:
        raise ValueError(f"{path} is not a CTranslate2 model this reader knows ({exc}); use the faster-whisper "
                         "STT backend (stt.backend = \"faster-whisper\") for it") from None
    return spec, weights
