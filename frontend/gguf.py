"""GGUF checkpoints (llama.cpp format): a quick check of the header before transformers loads them.

    check_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")  # -> "llama", or a one-line FrontendError

The architecture must be one transformers converts from GGUF, and the file
must carry its tokenizer (`tokenizer.ggml.*`). transformers itself (with the
`gguf` and `accelerate` packages) then dequantises the weights
(`tasic.frontend.hf.load_model`, `load_tokenizer`); its own parse of the
file takes tens of seconds for a 135M model, this scan a fraction of one.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

from tasic.frontend.errors import FrontendError

GGUF_MAGIC = b"GGUF"
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


def _read(stream: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize("<" + fmt)
    data = stream.read(size)
    if len(data) != size:
        raise EOFError("truncated GGUF header")
    return struct.unpack("<" + fmt, data)[0]


def _string(stream: BinaryIO) -> str:
    return stream.read(_read(stream, "Q")).decode("utf-8", errors="replace")


def _value(stream: BinaryIO, kind: int) -> Any:
    """One metadata value; arrays are skipped (None)."""
    if kind == _STRING:
        return _string(stream)
    if kind == _ARRAY:
        item_kind, count = _read(stream, "I"), _read(stream, "Q")
        if item_kind in _SCALARS:
            stream.seek(count * struct.calcsize("<" + _SCALARS[item_kind]), 1)
        else:
            for _ in range(count):
                _value(stream, item_kind)
        return None
    if kind not in _SCALARS:
        raise ValueError(f"unknown GGUF value type {kind}")
    return _read(stream, _SCALARS[kind])


def gguf_metadata(path: str | Path) -> dict[str, Any]:
    """The header's key/value metadata (array values are None)."""
    with open(path, "rb") as stream:
        try:
            if stream.read(4) != GGUF_MAGIC:
                raise FrontendError(f"'{path}' is not a GGUF file")
            _read(stream, "I")  # version
            _read(stream, "Q")  # tensor count
            return {_string(stream): _value(stream, _read(stream, "I")) for _ in range(_read(stream, "Q"))}
        except (EOFError, ValueError, struct.error) as err:
            raise FrontendError(f"'{path}' has a broken GGUF header: {err}") from err


def check_gguf(path: str | Path) -> str:
    """The architecture of a GGUF file transformers can load with its tokenizer; FrontendError otherwise."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    file = Path(path)
    if not file.is_file():
        raise FrontendError(f"model path '{path}' does not exist")
    metadata = gguf_metadata(file)
    architecture = metadata.get("general.architecture")
    supported = [name for name in GGUF_SUPPORTED_ARCHITECTURES if name not in ("general", "tokenizer")]
    if architecture not in supported:
        raise FrontendError(
            f"GGUF architecture '{architecture}' of '{path}' is not supported; supported: {', '.join(supported)}"
        )
    if "tokenizer.ggml.tokens" not in metadata or "tokenizer.ggml.model" not in metadata:
        raise FrontendError(f"GGUF file '{path}' has no tokenizer (no tokenizer.ggml.tokens / tokenizer.ggml.model)")
    return str(architecture)
