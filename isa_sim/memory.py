"""HBM and SRAM as byte buffers: typed and strided tile views, inputs and outputs."""

from __future__ import annotations

import ml_dtypes
import numpy as np
from numpy.lib.stride_tricks import as_strided
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


def convert(values: np.ndarray, dt: int) -> np.ndarray:
    """`values` converted to dtype code `dt` (floats round to nearest even; bool is nonzero -> 1)."""
    if dt == DType.BOOL:
        return (values != 0).astype(np.uint8)
    return values.astype(NP_DTYPES[dt], copy=False)


def extent(rows: int, cols: int, row_stride: int, col_stride: int, dt: int) -> tuple[int, int]:
    """Byte range [lo, hi) relative to the base address touched by a strided tile."""
    esize = DTYPE_BYTES[DType(dt)]
    last_i, last_j = (rows - 1) * row_stride, (cols - 1) * col_stride
    lo = min(0, last_i) + min(0, last_j)
    hi = max(0, last_i) + max(0, last_j) + 1
    return lo * esize, hi * esize


def strided(buf: np.ndarray, addr: int, dt: int, rows: int, cols: int, row_stride: int, col_stride: int) -> np.ndarray:
    """Writable view of element (i, j) at `addr + (i*row_stride + j*col_stride) * bytes(dt)` of `buf`.

    The caller has checked that the range is inside `buf`; strides are in elements and may be 0 or negative.
    """
    if col_stride == 1 and row_stride == cols:
        return tile(buf, addr, dt, rows, cols)
    lo, hi = extent(rows, cols, row_stride, col_stride, dt)
    dtype = NP_DTYPES[dt]
    span = buf[addr + lo : addr + hi].view(dtype)
    first = span[-lo // dtype.itemsize :]
    return as_strided(first, (rows, cols), (row_stride * dtype.itemsize, col_stride * dtype.itemsize))


def tile(buf: np.ndarray, addr: int, dt: int, rows: int, cols: int) -> np.ndarray:
    """Writable view of the dense row-major `[rows, cols]` tile of dtype `dt` at `addr`."""
    dtype = NP_DTYPES[dt]
    return buf[addr : addr + rows * cols * dtype.itemsize].view(dtype).reshape(rows, cols)


def _is_float(dtype: np.dtype) -> bool:
    return dtype.kind == "f" or dtype in _NARROW_FLOATS


def prepare_input(sym: Symbol, value: np.ndarray) -> np.ndarray:
    """`value` checked against the input symbol and converted to its dtype; raises SimError."""
    arr = np.asarray(value)
    if tuple(arr.shape) != tuple(sym.shape):
        raise SimError(f"input '{sym.name}' has shape {tuple(arr.shape)}, expected {tuple(sym.shape)}")
    dt = DTYPE_BY_NAME[sym.dtype]
    if dt in FLOAT_DTYPES and _is_float(arr.dtype):
        return convert(arr, dt)
    if dt in INT_DTYPES and arr.dtype.kind in "iu":
        info = np.iinfo(NP_DTYPES[dt])
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise SimError(f"input '{sym.name}' has values outside the range of {sym.dtype}")
        return arr.astype(NP_DTYPES[dt])
    if dt == DType.BOOL and arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    raise SimError(f"input '{sym.name}' has dtype {arr.dtype}, expected {sym.dtype}")


def write_symbol(hbm: np.ndarray, sym: Symbol, value: np.ndarray) -> None:
    """Store a prepared array at the symbol's HBM address."""
    hbm[sym.address : sym.address + sym.nbytes] = np.ascontiguousarray(value).reshape(-1).view(np.uint8)


def read_symbol(hbm: np.ndarray, sym: Symbol) -> np.ndarray:
    """A copy of the symbol's tensor; bf16 and f8 come back as float32, bool as bool."""
    dt = DTYPE_BY_NAME[sym.dtype]
    raw = hbm[sym.address : sym.address + sym.nbytes].view(NP_DTYPES[dt]).reshape(sym.shape)
    if dt == DType.BOOL:
        return raw != 0
    if raw.dtype in _NARROW_FLOATS:
        return raw.astype(np.float32)
    return raw.copy()
