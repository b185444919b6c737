"""HBM and SRAM as byte buffers: typed and strided tile views, inputs and outputs."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np

from tasic.backend.isa_spec import DTYPE_BY_NAME, DTYPE_BYTES, DType
from tasic.backend.tbin import Symbol
from tasic.isa_sim.errors import SimError

NP_DTYPES: dict[int, np.dtype] = {
    DType.F32: np.dtype(np.float32),
    DType.BF16: np.dtype(ml_dtypes.bfloat16),
    DType.F16: np.dtype(np.float16),
    DType.F8E4M3: np.dtype(ml_dtypes.float8_e4m3fn),
    DType.F8E5M2: np.dtype(ml_dtypes.float8_e5m2),
    DType.I32: np.dtype(np.int32),
    DType.I64: np.dtype(np.int64),
    DType.BOOL: np.dtype(np.uint8),
    DType.I8: np.dtype(np.int8),
}
FLOAT_DTYPES = frozenset({DType.F32, DType.BF16, DType.F16, DType.F8E4M3, DType.F8E5M2})
INT_DTYPES = frozenset({DType.I32, DType.I64, DType.I8})
_NARROW_FLOATS = frozenset(NP_DTYPES[dt] for dt in (DType.BF16, DType.F8E4M3, DType.F8E5M2))


FP8_LIMITS: dict[int, float] = {DType.F8E4M3: 448.0, DType.F8E5M2: 57344.0}
"""Largest finite magnitudes of the 8-bit floats: conversions to them saturate there (docs/isa.md)."""


def saturated(values: np.ndarray, dt: int) -> np.ndarray:
    """`values` clipped to +-the largest finite value of dtype code `dt` when it is an 8-bit float (NaN stays
    NaN), as FP8 conversion units do: without it e4m3 turns 464 and beyond into NaN, e5m2 into infinity."""
    limit = FP8_LIMITS.get(dt)
    return values if limit is None else np.clip(values, -limit, limit)


def convert(values: np.ndarray, dt: int) -> np.ndarray:
    """`values` converted to dtype code `dt` (floats round to nearest even, 8-bit ones saturating; bool is
    nonzero -> 1)."""
    if dt == DType.BOOL:
        return (values != 0).astype(np.uint8)
    return saturated(values, dt).astype(NP_DTYPES[dt], copy=False)


def extent(rows: int, cols: int, row_stride: int, col_stride: int, dt: int) -> tuple[int, int]:
    """Byte range [lo, hi) relative to the base address touched by a strided tile."""
    esize = DTYPE_BYTES[dt]
    last_i, last_j = (rows - 1) * row_stride, (cols - 1) * col_stride
    lo = min(0, last_i) + min(0, last_j)
    hi = max(0, last_i) + max(0, last_j) + 1
    return lo * esize, hi * esize


def strided(buf: np.ndarray, addr: int, dt: int, rows: int, cols: int, row_stride: int, col_stride: int) -> np.ndarray:
    """Writable view of element (i, j) at `addr + (i*row_stride + j*col_stride) * bytes(dt)` of `buf`.

    The caller has checked that the range is inside `buf`; strides are in elements and may be 0 or negative.
    """
    dtype = NP_DTYPES[dt]
    if not rows or not cols:
        return np.empty((rows, cols), dtype)
    size = dtype.itemsize
    return np.ndarray((rows, cols), dtype, buf, addr, (row_stride * size, col_stride * size))


def tile(buf: np.ndarray, addr: int, dt: int, rows: int, cols: int) -> np.ndarray:
    """Writable view of the dense row-major `[rows, cols]` tile of dtype `dt` at `addr`."""
    dtype = NP_DTYPES[dt]
    if not rows or not cols:
        return np.empty((rows, cols), dtype)
    return np.ndarray((rows, cols), dtype, buf, addr)


def _is_float(dtype: np.dtype) -> bool:
    return dtype.kind == "f" or dtype in _NARROW_FLOATS


class SparseMemory:
    """Zero-initialised byte memory that stores only the pages written to (the HBM of a timing-only machine).

    It supports the slicing `read_symbol`, `write_symbol` and index reads use: `mem[lo:hi]` returns a copy,
    `mem[lo:hi] = bytes` stores.
    """

    PAGE = 1 << 16

    def __init__(self, size: int) -> None:
        self.size = size
        self.pages: dict[int, np.ndarray] = {}

    def __getitem__(self, key: slice) -> np.ndarray:
        out = np.zeros(key.stop - key.start, np.uint8)
        for page, lo, hi in self._spans(key):
            data = self.pages.get(page)
            if data is not None:
                base = page * self.PAGE
                out[lo - key.start : hi - key.start] = data[lo - base : hi - base]
        return out

    def __setitem__(self, key: slice, value: np.ndarray) -> None:
        raw = np.asarray(value, np.uint8).reshape(-1)
        for page, lo, hi in self._spans(key):
            data = self.pages.setdefault(page, np.zeros(self.PAGE, np.uint8))
            base = page * self.PAGE
            data[lo - base : hi - base] = raw[lo - key.start : hi - key.start]

    def _spans(self, key: slice) -> list[tuple[int, int, int]]:
        """(page, lo, hi) for every page the byte range [key.start, key.stop) touches."""
        first, last = key.start // self.PAGE, math.ceil(key.stop / self.PAGE)
        return [
            (page, max(key.start, page * self.PAGE), min(key.stop, (page + 1) * self.PAGE))
            for page in range(first, last)
        ]


Memory = np.ndarray | SparseMemory


def prepare_value(sym: Symbol, value: np.ndarray, what: str) -> np.ndarray:
    """`value` checked against the symbol and converted to its dtype; SimError messages start with `what`."""
    arr = np.asarray(value)
    if tuple(arr.shape) != tuple(sym.shape):
        raise SimError(f"{what} has shape {tuple(arr.shape)}, expected {tuple(sym.shape)}")
    dt = DTYPE_BY_NAME[sym.dtype]
    if dt in FLOAT_DTYPES and _is_float(arr.dtype):
        return convert(arr, dt)
    if dt in INT_DTYPES and arr.dtype.kind in "iu":
        info = np.iinfo(NP_DTYPES[dt])
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise SimError(f"{what} has values outside the range of {sym.dtype}")
        return arr.astype(NP_DTYPES[dt])
    if dt == DType.BOOL and arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    raise SimError(f"{what} has dtype {arr.dtype}, expected {sym.dtype}")


def write_symbol(hbm: Memory, sym: Symbol, value: np.ndarray) -> None:
    """Store a prepared array at the symbol's HBM address."""
    hbm[sym.address : sym.address + sym.nbytes] = np.ascontiguousarray(value).reshape(-1).view(np.uint8)


def read_symbol(hbm: Memory, sym: Symbol) -> np.ndarray:
    """A copy of the symbol's tensor; bf16 and f8 come back as float32, bool as bool."""
    dt = DTYPE_BY_NAME[sym.dtype]
    raw = hbm[sym.address : sym.address + sym.nbytes].view(NP_DTYPES[dt]).reshape(sym.shape)
    if dt == DType.BOOL:
        return raw != 0
    if raw.dtype in _NARROW_FLOATS:
        return raw.astype(np.float32)
    return raw.copy()
