"""The tasic ISA: opcodes, engines, dtypes and the fixed 32-byte encoding.

This module is the single source of truth for the instruction set. It is pure
Python (struct only): the assembler, the binary writer and reader, the `isa`
dialect lowering and the simulator all use it. docs/isa.md documents it.

Every instruction is 32 bytes, little endian, one layout for all opcodes::

    byte  size field    meaning (per opcode, see OPCODES)
    0     1    opcode
    1     1    func     sub-operation (VPU function, reduce kind, engine id)
    2     1    flags    bit0 accumulate, bits1-2 broadcast mode, bit3 transpose
    3     1    dt_d     dtype of the destination
    4     1    dt_a     dtype of source a
    5     1    dt_b     dtype of source b
    6     2    rows     M / rows
    8     2    cols     N / cols
    10    2    depth    K
    12    1    reg_d    address register of the destination
    13    1    reg_a    address register of source a
    14    1    reg_b    address register of source b
    15    1    reg_c    address register of source c
    16    4    off_d    i32 offset added to reg_d
    20    4    off_a    i32 offset added to reg_a
    24    4    off_b    i32 offset added to reg_b
    28    4    imm      i32 / f32 bits / offset added to reg_c

Addresses are bytes: ``reg[r] + off``; register 0 always reads 0.
``imm64`` (ADDI, LOOP) is the 8 bytes 24..31 read as one signed i64.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from enum import IntEnum

INSTR_BYTES = 32
NUM_REGS = 32
NUM_SEMAPHORES = 64
_LAYOUT = struct.Struct("<BBBBBBHHHBBBBiiii")
assert _LAYOUT.size == INSTR_BYTES


class Engine(IntEnum):
    """Engines that execute instructions concurrently."""

    CTRL = 0  # sequencer: loops, address registers, halt
    DMA_LOAD = 1  # HBM -> SRAM
    DMA_STORE = 2  # SRAM -> HBM
    MXU = 3  # matrix engine
    VPU = 4  # vector engine
    LINK = 5  # chip-to-chip links: collectives, sends to the next pipeline stage


class DType(IntEnum):
    """Element types; codes are the dt_* field values."""

    F32 = 0
    BF16 = 1
    F16 = 2
    F8E4M3 = 3
    F8E5M2 = 4
    I32 = 5
    I64 = 6
    BOOL = 7  # one byte, 0 or 1
    I8 = 8


DTYPE_BYTES = {
    DType.F32: 4,
    DType.BF16: 2,
    DType.F16: 2,
    DType.F8E4M3: 1,
    DType.F8E5M2: 1,
    DType.I32: 4,
    DType.I64: 8,
    DType.BOOL: 1,
    DType.I8: 1,
}
DTYPE_NAMES = {
    DType.F32: "f32",
    DType.BF16: "bf16",
    DType.F16: "f16",
    DType.F8E4M3: "f8e4m3",
    DType.F8E5M2: "f8e5m2",
    DType.I32: "i32",
    DType.I64: "i64",
    DType.BOOL: "bool",
    DType.I8: "i8",
}
DTYPE_BY_NAME = {name: dt for dt, name in DTYPE_NAMES.items()}


class Op(IntEnum):
    """Opcodes. Field use per opcode is in OPCODES below."""

    HALT = 0x00
    ADDI = 0x01  # reg[reg_d] = reg[reg_a] + imm64
    LOOP = 0x02  # repeat the body up to the matching ENDLOOP imm64 times
    ENDLOOP = 0x03
    SIGNAL = 0x04  # on engine `func`, after its earlier work: sem[imm] += 1
    WAIT = 0x05  # on engine `func`, before its later work: wait sem[imm] > 0; -= 1
    DMA_LOAD = 0x10  # SRAM tile <- strided HBM
    DMA_STORE = 0x11  # strided HBM <- SRAM tile
    DMA_GATHER = 0x12  # SRAM rows <- HBM table rows picked by HBM indices
    DMA_SCATTER = 0x13  # HBM table rows picked by HBM indices <- SRAM rows
    MXU_MATMUL = 0x20  # C[M,N] (+)= A[M,K] @ B[K,N]; imm > 1: that many such products of consecutive tiles
    VPU_UNARY = 0x30  # d = f(a)
    VPU_BINARY = 0x31  # d = a (op) b, b broadcast per `flags`
    VPU_SCALAR = 0x32  # d = a (op) imm (f32)
    VPU_REDUCE = 0x33  # d[r, 0] = reduce over the row of a
    VPU_SELECT = 0x34  # d = c ? a : b   (c at reg_c + imm, dtype BOOL)
    VPU_FILL = 0x35  # d = imm (f32)
    VPU_CAUSAL = 0x36  # d[i, j] = -inf where j > i' + diag, or j <= i' + diag - depth (depth > 0: window);
    #                    i' = i mod imm when imm > 0 (query rows of several heads stacked), else i
    VPU_EXP_SUM = 0x37  # d = exp(a - b[r]) in dt_d; c[r, 0] = sum of row r of d (f32, at reg_c + imm)
    VPU_ROPE = 0x38  # d = rotary embedding of a's first `depth` columns, head by head (head_dim imm);
    #                  cos = b [rows, imm], sin the [rows, imm] tile after it; later columns copied
    LINK_ALLREDUCE = 0x40  # d = sum of tile a over the `depth` chips of the group, on every chip
    LINK_SEND = 0x41  # next pipeline stage's HBM window <- SRAM tile (fields as DMA_STORE), over the links


class UnaryFn(IntEnum):
    """VPU_UNARY functions (the `func` field)."""

    COPY = 0
    NEG = 1
    EXP = 2
    TANH = 3
    ERF = 4
    RSQRT = 5
    SQRT = 6
    RECIP = 7
    SIGMOID = 8
    SILU = 9
    GELU_ERF = 10
    GELU_TANH = 11
    ABS = 12
    LOG = 13
    RELU = 14
    COS = 15
    SIN = 16


class BinaryFn(IntEnum):
    """VPU_BINARY / VPU_SCALAR functions (the `func` field)."""

    ADD = 0
    SUB = 1
    MUL = 2
    DIV = 3
    MAX = 4
    MIN = 5
    POW = 6
    RSUB = 7  # b - a (for scalar - tensor)
    RDIV = 8  # b / a
    EQ = 9  # comparisons produce 1.0 / 0.0
    LT = 10
    GT = 11
    CLAMP = 12  # a clamped to [-b, b] (b >= 0): a saturating store's range in one pass


class ReduceFn(IntEnum):
    """VPU_REDUCE functions (the `func` field)."""

    SUM = 0
    MAX = 1
    MIN = 2
    SUMSQ = 3  # sum of squares (each square rounded to f32, as a separate multiply would)


class Broadcast(IntEnum):
    """How VPU_BINARY reads source b (flags bits 1-2)."""

    NONE = 0  # b has the shape of d
    ROW = 1  # b is [rows, 1]: one value per row
    COL = 2  # b is [1, cols]: one value per column


FLAG_ACCUMULATE = 0x1
FLAG_BCAST_SHIFT = 1
FLAG_BCAST_MASK = 0x6

# Cost classes a target file prices for the VPU.
TRANSCENDENTAL = {
    UnaryFn.EXP,
    UnaryFn.TANH,
    UnaryFn.ERF,
    UnaryFn.RSQRT,
    UnaryFn.SQRT,
    UnaryFn.RECIP,
    UnaryFn.SIGMOID,
    UnaryFn.SILU,
    UnaryFn.GELU_ERF,
    UnaryFn.GELU_TANH,
    UnaryFn.LOG,
    UnaryFn.COS,
    UnaryFn.SIN,
}


def matmul_batch(instr: Instr) -> int:
    """Products one MXU_MATMUL computes: C_i = A_i @ B_i over consecutive dense tiles (imm; 0 means 1)."""
    return max(1, instr.imm)


def engine_of(instr: Instr) -> Engine:
    """The engine an instruction occupies (SIGNAL/WAIT name theirs in func)."""
    op = Op(instr.opcode)
    if op in (Op.SIGNAL, Op.WAIT):
        return Engine(instr.func)
    return OPCODE_ENGINE[op]


OPCODE_ENGINE = {
    Op.HALT: Engine.CTRL,
    Op.ADDI: Engine.CTRL,
    Op.LOOP: Engine.CTRL,
    Op.ENDLOOP: Engine.CTRL,
    Op.DMA_LOAD: Engine.DMA_LOAD,
    Op.DMA_STORE: Engine.DMA_STORE,
    Op.DMA_GATHER: Engine.DMA_LOAD,
    Op.DMA_SCATTER: Engine.DMA_STORE,
    Op.MXU_MATMUL: Engine.MXU,
    Op.VPU_UNARY: Engine.VPU,
    Op.VPU_BINARY: Engine.VPU,
    Op.VPU_SCALAR: Engine.VPU,
    Op.VPU_REDUCE: Engine.VPU,
    Op.VPU_SELECT: Engine.VPU,
    Op.VPU_FILL: Engine.VPU,
    Op.VPU_CAUSAL: Engine.VPU,
    Op.VPU_EXP_SUM: Engine.VPU,
    Op.VPU_ROPE: Engine.VPU,
    Op.LINK_ALLREDUCE: Engine.LINK,
    Op.LINK_SEND: Engine.LINK,
}


@dataclass
class Instr:
    """One decoded instruction; field names follow the encoding table."""

    opcode: int
    func: int = 0
    flags: int = 0
    dt_d: int = 0
    dt_a: int = 0
    dt_b: int = 0
    rows: int = 0
    cols: int = 0
    depth: int = 0
    reg_d: int = 0
    reg_a: int = 0
    reg_b: int = 0
    reg_c: int = 0
    off_d: int = 0
    off_a: int = 0
    off_b: int = 0
    imm: int = 0

    @property
    def imm64(self) -> int:
        """Bytes 24..31 (off_b, imm) as one signed 64-bit immediate."""
        return struct.unpack("<q", struct.pack("<ii", self.off_b, self.imm))[0]

    def set_imm64(self, value: int) -> None:
        """Store a signed 64-bit immediate into (off_b, imm)."""
        self.off_b, self.imm = struct.unpack("<ii", struct.pack("<q", value))

    @property
    def imm_f32(self) -> float:
        """The imm field read as an IEEE float32."""
        return struct.unpack("<f", struct.pack("<i", self.imm))[0]

    def set_imm_f32(self, value: float) -> None:
        """Store an IEEE float32 into the imm field."""
        self.imm = struct.unpack("<i", struct.pack("<f", value))[0]

    @property
    def broadcast(self) -> Broadcast:
        """Broadcast mode of VPU_BINARY's source b."""
        return Broadcast((self.flags & FLAG_BCAST_MASK) >> FLAG_BCAST_SHIFT)

    def encode(self) -> bytes:
        """The 32-byte machine encoding."""
        return _LAYOUT.pack(*(getattr(self, f.name) for f in fields(self)))

    @staticmethod
    def decode(raw: bytes) -> Instr:
        """Decode 32 bytes; raises ValueError on an unknown opcode."""
        instr = Instr(*_LAYOUT.unpack(raw))
        if instr.opcode not in Op._value2member_map_:
            raise ValueError(f"unknown opcode 0x{instr.opcode:02x}")
        return instr


def float_bits(value: float) -> int:
    """The i32 whose bits are the float32 `value` (for imm fields)."""
    return struct.unpack("<i", struct.pack("<f", value))[0]


def encode_program(code: list[Instr]) -> bytes:
    """Concatenate the encodings of a program."""
    return b"".join(instr.encode() for instr in code)


def decode_program(raw: bytes) -> list[Instr]:
    """Decode a code section; raises ValueError naming the bad instruction."""
    if len(raw) % INSTR_BYTES:
        raise ValueError(f"code section size {len(raw)} is not a multiple of {INSTR_BYTES}")
    code = []
    for index in range(len(raw) // INSTR_BYTES):
        try:
            code.append(Instr.decode(raw[index * INSTR_BYTES : (index + 1) * INSTR_BYTES]))
        except ValueError as err:
            raise ValueError(f"instruction {index}: {err}") from None
    return code


_FORMAT_RANGES = {"B": (0, 0xFF), "H": (0, 0xFFFF), "i": (-(2**31), 2**31 - 1)}
# Inclusive (min, max) of every Instr field, derived from the encoding.
FIELD_RANGES: dict[str, tuple[int, int]] = {
    f.name: _FORMAT_RANGES[code] for f, code in zip(fields(Instr), _LAYOUT.format[1:], strict=True)
}
