"""Emit: the isa-level module plus the weight store -> a TBinary.

Each isa op becomes one 32-byte instruction (field mapping below, docs/isa.md);
isa.symbol directives become the symbol table, and weights are laid into the
constants image at their addresses in the HBM dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np
from xdsl.dialects.builtin import ModuleOp

from tasic.backend.isa_spec import (
    DTYPE_BY_NAME,
    DTYPE_BYTES,
    FLAG_BCAST_SHIFT,
    BinaryFn,
    Broadcast,
    Engine,
    Instr,
    Op,
    ReduceFn,
    UnaryFn,
    float_bits,
)
from tasic.backend.target import Target
from tasic.backend.tbin import Symbol, TBinary
from tasic.ir.isa import EntryOp, IsaOp, SymbolOp

NUMPY_DTYPES: dict[str, Any] = {
    "f32": np.float32,
    "bf16": ml_dtypes.bfloat16,
    "f16": np.float16,
    "f8e4m3": ml_dtypes.float8_e4m3fn,
    "f8e5m2": ml_dtypes.float8_e5m2,
    "i32": np.int32,
    "i64": np.int64,
    "bool": np.uint8,
    "i8": np.int8,
}


# Strided HBM <-> dense SRAM transfers: one field layout; link_send is dma_store into the next stage's HBM.
_STRIDED_OPS = {"dma_load": Op.DMA_LOAD, "dma_store": Op.DMA_STORE, "link_send": Op.LINK_SEND}


def _dt(name: object) -> int:
    return int(DTYPE_BY_NAME[str(name)])


def encode_op(op: IsaOp) -> Instr:
    """The machine encoding of one isa op."""
    f = op.field
    mnemonic = op.name.removeprefix("isa.")
    if mnemonic in ("halt", "endloop"):
        return Instr(Op.HALT if mnemonic == "halt" else Op.ENDLOOP)
    if mnemonic == "addi":
        instr = Instr(Op.ADDI, reg_d=int(f("rd")), reg_a=int(f("rs")))
        instr.set_imm64(int(f("imm")))
        return instr
    if mnemonic == "loop":
        instr = Instr(Op.LOOP)
        instr.set_imm64(int(f("count")))
        return instr
    if mnemonic in ("signal", "wait"):
        engine = Engine[str(f("engine")).upper()]
        return Instr(Op.SIGNAL if mnemonic == "signal" else Op.WAIT, func=int(engine), imm=int(f("sem")))
    size = {"rows": int(f("rows")), "cols": int(f("cols"))} if "rows" in op.FIELDS else {}
    if mnemonic in _STRIDED_OPS:
        sram = (int(f("sram_reg")), int(f("sram_off")), _dt(f("dt_sram")))
        hbm = (int(f("hbm_reg")), int(f("hbm_off")), _dt(f("dt_hbm")))
        dest, source = (sram, hbm) if mnemonic == "dma_load" else (hbm, sram)
        return Instr(
            _STRIDED_OPS[mnemonic],
            reg_d=dest[0], off_d=dest[1], dt_d=dest[2], reg_a=source[0], off_a=source[1], dt_a=source[2],
            off_b=int(f("row_stride")), imm=int(f("col_stride")), **size,
        )  # fmt: skip
    if mnemonic == "dma_gather":
        return Instr(
            Op.DMA_GATHER, reg_d=int(f("sram_reg")), off_d=int(f("sram_off")), reg_a=int(f("table_reg")),
            off_a=int(f("table_off")), reg_b=int(f("ids_reg")), off_b=int(f("ids_off")), imm=int(f("table_stride")),
            dt_d=_dt(f("dt_sram")), dt_a=_dt(f("dt_table")), dt_b=_dt(f("dt_ids")), **size,
        )  # fmt: skip
    if mnemonic == "dma_scatter":
        return Instr(
            Op.DMA_SCATTER, reg_d=int(f("table_reg")), off_d=int(f("table_off")), reg_a=int(f("sram_reg")),
            off_a=int(f("sram_off")), reg_b=int(f("ids_reg")), off_b=int(f("ids_off")), imm=int(f("table_stride")),
            dt_d=_dt(f("dt_table")), dt_a=_dt(f("dt_sram")), dt_b=_dt(f("dt_ids")), **size,
        )  # fmt: skip
    if mnemonic == "mxu_matmul":
        return Instr(
            Op.MXU_MATMUL, flags=int(f("accumulate")) & 1, reg_d=int(f("c_reg")), off_d=int(f("c_off")),
            reg_a=int(f("a_reg")), off_a=int(f("a_off")), reg_b=int(f("b_reg")), off_b=int(f("b_off")),
            rows=int(f("m")), cols=int(f("n")), depth=int(f("k")), imm=int(f("batch")) if int(f("batch")) > 1 else 0,
            dt_d=_dt(f("dt_c")), dt_a=_dt(f("dt_a")), dt_b=_dt(f("dt_b")),
        )  # fmt: skip
    return _encode_vector(op, mnemonic, size)


def _encode_vector(op: IsaOp, mnemonic: str, size: dict[str, int]) -> Instr:
    f = op.field
    operands: dict[str, int] = {}
    for role, reg_field, off_field in (("d", "reg_d", "off_d"), ("a", "reg_a", "off_a"), ("b", "reg_b", "off_b")):
        if f"{role}_reg" in op.FIELDS:
            operands[reg_field] = int(f(f"{role}_reg"))
            operands[off_field] = int(f(f"{role}_off"))
            operands[f"dt_{role}"] = _dt(f(f"dt_{role}"))
    if mnemonic == "vpu_unary":
        return Instr(Op.VPU_UNARY, func=int(UnaryFn[str(f("fn")).upper()]), **operands, **size)
    if mnemonic == "vpu_reduce":
        return Instr(Op.VPU_REDUCE, func=int(ReduceFn[str(f("fn")).upper()]), **operands, **size)
    if mnemonic == "vpu_binary":
        flags = int(Broadcast[str(f("broadcast")).upper()]) << FLAG_BCAST_SHIFT
        return Instr(Op.VPU_BINARY, func=int(BinaryFn[str(f("fn")).upper()]), flags=flags, **operands, **size)
    if mnemonic == "vpu_scalar":
        bits = float_bits(float(f("value")))
        return Instr(Op.VPU_SCALAR, func=int(BinaryFn[str(f("fn")).upper()]), imm=bits, **operands, **size)
    if mnemonic == "vpu_select":
        return Instr(Op.VPU_SELECT, reg_c=int(f("c_reg")), imm=int(f("c_off")), **operands, **size)
    if mnemonic == "vpu_exp_sum":
        return Instr(Op.VPU_EXP_SUM, reg_c=int(f("c_reg")), imm=int(f("c_off")), **operands, **size)
    if mnemonic == "vpu_rope":
        return Instr(Op.VPU_ROPE, imm=int(f("head_dim")), depth=int(f("roped")), **operands, **size)
    if mnemonic == "vpu_fill":
        return Instr(Op.VPU_FILL, imm=float_bits(float(f("value"))), **operands, **size)
    if mnemonic == "link_allreduce":
        return Instr(Op.LINK_ALLREDUCE, depth=int(f("chips")), **operands, **size)
    if mnemonic == "vpu_causal":
        window = int(f("window"))
        return Instr(
            Op.VPU_CAUSAL,
            reg_a=int(f("diag_reg")),
            off_a=int(f("diag_off")),
            depth=window,
            imm=int(f("period")),
            **operands,
            **size,
        )
    raise ValueError(f"cannot encode {op.name}")


def _symbol(op: SymbolOp) -> Symbol:
    shape = tuple(a.value.data for a in op.shape.data)  # type: ignore[attr-defined]
    return Symbol(op.sym.data, op.kind.data, op.address.value.data, shape, op.dtype.data)


def _sram_extent(instr: Instr) -> int:
    """Highest SRAM byte an instruction touches (a conservative use figure)."""
    opcode = Op(instr.opcode)
    cells = instr.rows * instr.cols
    if opcode in (Op.DMA_LOAD, Op.DMA_GATHER):
        return instr.off_d + cells * DTYPE_BYTES[instr.dt_d]
    if opcode in (Op.DMA_STORE, Op.DMA_SCATTER, Op.LINK_SEND):
        return instr.off_a + cells * DTYPE_BYTES[instr.dt_a]
    if opcode == Op.MXU_MATMUL:
        return max(
            instr.off_d + cells * DTYPE_BYTES[instr.dt_d],
            instr.off_a + instr.rows * instr.depth * DTYPE_BYTES[instr.dt_a],
            instr.off_b + instr.depth * instr.cols * DTYPE_BYTES[instr.dt_b],
        )
    if opcode == Op.VPU_REDUCE:
        return instr.off_d + instr.rows * DTYPE_BYTES[instr.dt_d]
    if opcode.name.startswith("VPU"):
        return instr.off_d + cells * DTYPE_BYTES[instr.dt_d]
    return 0


def emit_binary(
    module: ModuleOp, weights: Mapping[str, np.ndarray] | None, target: Target, metadata: dict[str, Any]
) -> TBinary:
    """Build the binary of an isa-level module; without `weights`, a timing-only binary (no constants)."""
    code: list[Instr] = []
    locs: list[str] = []
    loc_index: dict[str, int] = {}
    instr_locs: list[int] = []
    symbols: list[Symbol] = []
    weight_parts: list[tuple[int, bytes]] = []
    shards: dict[str, list[int]] = {}
    other_chips: list[list[bytes]] = []  # per sharded weight (symbol order): its bytes on chips 1, 2, ...
    entry_points: dict[str, int] = {}
    entries: dict[str, dict[str, dict[str, str]]] = {}
    for op in module.body.block.ops:
        if isinstance(op, SymbolOp):
            symbol = _symbol(op)
            symbols.append(symbol)
            shard = _shard(op)
            if shard is not None:
                shards[symbol.name] = list(shard)
            if symbol.kind == "weight" and weights is not None:
                parts = _weight_bytes(op, weights, symbol, shard)
                weight_parts.append((symbol.address, parts[0]))
                if len(parts) > 1:
                    other_chips.append(parts[1:])
            if op.entry is not None and op.user_name is not None and symbol.kind in ("input", "output"):
                side = entries.setdefault(op.entry.data, {"inputs": {}, "outputs": {}})
                side[f"{symbol.kind}s"][op.user_name.data] = symbol.name
            continue
        if isinstance(op, EntryOp):
            entry_points[op.sym.data] = len(code)
            continue
        assert isinstance(op, IsaOp)
        code.append(encode_op(op))
        loc = op.properties.get("loc")
        text = loc.data if loc is not None else ""  # type: ignore[union-attr]
        if text not in loc_index:
            loc_index[text] = len(locs)
            locs.append(text)
        instr_locs.append(loc_index[text])
    image = bytearray(max((a + len(b) for a, b in weight_parts), default=0))
    for address, raw in weight_parts:
        image[address : address + len(raw)] = raw
    hbm_end = max((s.address + s.nbytes for s in symbols), default=0)
    meta = dict(metadata)
    if weights is None:
        meta["timing_only"] = True
    if shards:
        meta["chips"] = max(parts for _, parts in shards.values())
        meta["shards"] = shards
    if entries:
        meta["entries"] = entries
    meta.update(
        hbm_bytes=-(-hbm_end // 64) * 64,
        sram_bytes=max((_sram_extent(i) for i in code), default=0),
        locs=locs,
        instr_locs=instr_locs,
    )
    shard_data = b"".join(
        parts[chip] for chip in range(len(other_chips[0]) if other_chips else 0) for parts in other_chips
    )
    return TBinary(target.name, target.hash, code, bytes(image), symbols, entry_points or {"main": 0}, meta, shard_data)


def _shard(op: SymbolOp) -> tuple[int, int] | None:
    if op.shard_dim is None or op.shard_parts is None:
        return None
    return op.shard_dim.value.data, op.shard_parts.value.data


def _weight_bytes(
    op: SymbolOp, weights: Mapping[str, np.ndarray], symbol: Symbol, shard: tuple[int, int] | None
) -> list[bytes]:
    """The symbol's bytes: one entry, or one per chip for a sharded weight."""
    source = op.source.data if op.source is not None else symbol.name
    array = np.asarray(weights[source])
    parts = np.split(array, shard[1], axis=shard[0]) if shard is not None else [array]
    if op.transpose is not None:
        parts = [part.T for part in parts]
    return [np.ascontiguousarray(part.astype(NUMPY_DTYPES[symbol.dtype])).tobytes() for part in parts]
