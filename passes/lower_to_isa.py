"""lower-to-isa: place HBM buffers and turn tile kernels into instructions.

Each HBM access gets an address register, set before the kernel's loops and
advanced by `addi` at the end of every loop body it moves with (and rewound
after the loop). SRAM tiles are addressed absolutely. Before::

    tile.loop 4 : i64 {
      tile.dma_load %x, %a {rows = 2 : i64, cols = 32 : i64, offset = 0 : i64, row_stride = 32 : i64,
                            col_stride = 1 : i64, loop_strides = [64 : i64], sram_offset = 0 : i64} : ...
    }

After::

    isa.addi {rd = 1 : i64, rs = 0 : i64, imm = 0 : i64}
    isa.loop {count = 4 : i64}
    isa.dma_load {sram_reg = 0 : i64, sram_off = 0 : i64, hbm_reg = 1 : i64, hbm_off = 0 : i64, ...}
    isa.addi {rd = 1 : i64, rs = 1 : i64, imm = 256 : i64}
    isa.endloop
    isa.addi {rd = 1 : i64, rs = 1 : i64, imm = -1024 : i64}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, IntegerAttr, ModuleOp, StringAttr, i64
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from tasic.ir import tile
from tasic.ir.isa import NUM_REGS, EntryOp, SymbolOp, create_instruction
from tasic.passes.tiling.dtypes import dtype_name, element_bytes

ALIGN = 64
MAX_OFFSET = 2**31  # an instruction's byte offset from its address register is an i32
KIND_ORDER = ("weight", "kv", "input", "output", "temp")


class LoweringError(Exception):
    """The module is not at the tile level lower-to-isa starts from."""


@dataclass(frozen=True)
class LowerToIsaPass(ModulePass):
    """Replace tile functions by isa.symbol directives and one instruction stream per function.

    A module with one function @main is one program; with several functions,
    each becomes an entry point (isa.entry) sharing weights and KV state by name.
    """

    name = "lower-to-isa"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        """Lower every tile-level function in the module."""
        functions = [f for f in op.body.block.ops if isinstance(f, func.FuncOp)]
        if not functions:
            return
        for function in functions:
            for top in function.body.block.ops:
                if not isinstance(top, tile.KernelOp | tile.HbmBufferOp | func.ReturnOp):
                    raise LoweringError(
                        f"lower-to-isa needs tile-level IR, but @{function.sym_name.data} has '{top.name}'"
                        " (run tile, plan-sram and insert-sync before it)"
                    )
        entries = not (len(functions) == 1 and functions[0].sym_name.data == "main")
        addresses, symbols = _place_buffers(functions, entries)
        lowered: list[Operation] = list(symbols)
        for function in functions:
            if entries:
                lowered.append(EntryOp.create(properties={"name": StringAttr(function.sym_name.data)}))
            for kernel in function.body.block.ops:
                if isinstance(kernel, tile.KernelOp):
                    lowered.extend(KernelLowering(kernel, addresses).lower())
            lowered.append(create_instruction("halt"))
        for function in functions:
            function.detach()
            function.erase()
        op.body.block.add_ops(lowered)


def _place_buffers(functions: list[func.FuncOp], entries: bool) -> tuple[dict[SSAValue, int], list[SymbolOp]]:
    """HBM addresses: shared weights and KV state once, then each function's own buffers."""
    buffers = [(f, b) for f in functions for b in f.body.block.ops if isinstance(b, tile.HbmBufferOp)]
    addresses: dict[SSAValue, int] = {}
    placed: dict[tuple[str, ...], int] = {}
    symbols = []
    address = 0
    for kind in KIND_ORDER:
        for function, buffer in (fb for fb in buffers if fb[1].kind.data == kind):
            name = buffer.sym.data
            shared = kind in ("weight", "kv")
            key = (
                (kind, name, str(buffer.transpose is not None), str(buffer.shard))
                if shared
                else (function.sym_name.data, name)
            )
            if key in placed:
                addresses[buffer.result] = placed[key]
                continue
            symbols.append(_symbol(buffer, function.sym_name.data if entries and not shared else None, address))
            placed[key] = addresses[buffer.result] = address
            shape = buffer.result.type.get_shape()
            address += -(-prod(shape) * element_bytes(buffer.result.type.element_type) // ALIGN) * ALIGN
    return addresses, symbols


def _symbol(buffer: tile.HbmBufferOp, entry: str | None, address: int) -> SymbolOp:
    name, kind = buffer.sym.data, buffer.kind.data
    props = {
        "name": StringAttr(f"{name}.T" if buffer.transpose is not None else name),
        "kind": StringAttr(kind),
        "address": IntegerAttr(address, i64),
        "shape": ArrayAttr([IntegerAttr(n, i64) for n in buffer.result.type.get_shape()]),
        "dtype": StringAttr(dtype_name(buffer.result.type.element_type)),
    }
    if kind == "weight":
        props["source"] = StringAttr(name)
    if buffer.transpose is not None:
        props["transpose"] = IntegerAttr(1, i64)
    shard = buffer.shard
    if shard is not None:
        props["shard_dim"], props["shard_parts"] = IntegerAttr(shard[0], i64), IntegerAttr(shard[1], i64)
        if kind == "weight":
            props["name"] = StringAttr(f"{props['name'].data}@tp{shard[0]}")  # type: ignore[attr-defined]
    if entry is not None:
        props["name"] = StringAttr(f"{entry}.{name}")
        props["entry"] = StringAttr(entry)
        props["user_name"] = StringAttr(name)
    return SymbolOp.create(properties=props)


@dataclass
class Access:
    """An address register: its value before the loops and its advance per loop."""

    register: int
    base: int
    loops: list[tile.LoopOp]
    strides: list[int]


@dataclass
class KernelLowering:
    """Instructions of one kernel."""

    kernel: tile.KernelOp
    addresses: dict[SSAValue, int]
    registers: list[Access] = field(default_factory=list)
    # (op, role) -> its register and the constant byte offset from the register's value
    accesses: dict[tuple[int, str], tuple[Access, int]] = field(default_factory=dict)
    out: list[Operation] = field(default_factory=list)

    @property
    def loc(self) -> str:
        """The kernel's source location."""
        return self.kernel.loc.data

    def lower(self) -> list[Operation]:
        """Registers, then the body: accesses outside loops get theirs set at the start; each top-level
        loop nest's are set just before it, reusing the register numbers of the nests before it."""
        self._assign_registers()
        for access in self.registers:
            if not access.loops:
                self._emit("addi", rd=access.register, rs=0, imm=access.base)
        self._block(self.kernel.body.block, top_level=True)
        return self.out

    def _emit(self, mnemonic: str, **values: int | str | float) -> None:
        self.out.append(create_instruction(mnemonic, self.loc, **values))

    def _assign_registers(self) -> None:
        """One register per distinct (loops, strides) pattern; accesses differing by a constant share it.
        Accesses outside loops come first; every top-level loop nest numbers its own from there on."""
        found = []
        for op in self.kernel.walk():
            for role, (value, offset, strides, scale) in _addressed(op).items():
                base = (self.addresses[value] if value is not None else 0) + offset * scale
                found.append((op, role, base, tile.enclosing_loops(op), [s * scale for s in strides]))
        fixed = [entry for entry in found if not entry[3]]
        self._allocate(fixed, 1)
        first_free = len(self.registers) + 1
        nests: dict[int, list[tuple[Operation, str, int, list[tile.LoopOp], list[int]]]] = {}
        for entry in found:
            if entry[3]:
                nests.setdefault(id(entry[3][0]), []).append(entry)
        for entries in nests.values():
            self._allocate(entries, first_free)

    def _allocate(self, entries: list[tuple[Operation, str, int, list[tile.LoopOp], list[int]]], first: int) -> None:
        """Registers from number `first` on for `entries` (op, role, base, loops, byte strides)."""
        by_pattern: dict[tuple[tuple[int, ...], tuple[int, ...]], list[Access]] = {}
        register = first
        for op, role, base, loops, scaled in entries:
            candidates = by_pattern.setdefault((tuple(id(loop) for loop in loops), tuple(scaled)), [])
            access = next((a for a in candidates if abs(base - a.base) < MAX_OFFSET), None)
            if access is None:
                if register >= NUM_REGS:
                    raise LoweringError(f"kernel '{self.loc}' needs more than {NUM_REGS - 1} address registers")
                access = Access(register, base, loops, scaled)
                register += 1
                self.registers.append(access)
                candidates.append(access)
            self.accesses[(id(op), role)] = (access, base - access.base)

    def _register(self, op: Operation, role: str) -> int:
        return self.accesses[(id(op), role)][0].register

    def _offset(self, op: Operation, role: str) -> int:
        return self.accesses[(id(op), role)][1]

    def _sram_operand(self, op: Operation, tile_value: SSAValue) -> dict[str, int]:
        """sram_reg / sram_off of a DMA: a register when the SRAM address moves with loops, else r0."""
        if (id(op), "sram") in self.accesses:
            return {"sram_reg": self._register(op, "sram"), "sram_off": self._offset(op, "sram")}
        return {"sram_reg": 0, "sram_off": _sram(tile_value, op.int_prop("sram_offset"))}  # type: ignore[attr-defined]

    def _block(self, block: object, top_level: bool = False) -> None:
        for op in block.ops:  # type: ignore[attr-defined]
            if isinstance(op, tile.LoopOp):
                if top_level:
                    for access in self.registers:
                        if access.loops and access.loops[0] is op:
                            self._emit("addi", rd=access.register, rs=0, imm=access.base)
                self._loop(op)
            elif not isinstance(op, tile.SramBufferOp):
                self._instruction(op)

    def _loop(self, loop: tile.LoopOp) -> None:
        count = loop.count.value.data
        moving = [(a, a.strides[a.loops.index(loop)]) for a in self.registers if loop in a.loops]
        moving = [(a, s) for a, s in moving if s != 0]
        self._emit("loop", count=count)
        self._block(loop.body.block)
        for access, stride in moving:
            self._emit("addi", rd=access.register, rs=access.register, imm=stride)
        self._emit("endloop")
        for access, stride in moving:
            self._emit("addi", rd=access.register, rs=access.register, imm=-stride * count)

    def _instruction(self, op: Operation) -> None:
        reg = self._register
        if isinstance(op, tile.DmaLoadOp):
            self._emit(
                "dma_load", **self._sram_operand(op, op.dest), hbm_reg=reg(op, "hbm"),
                hbm_off=self._offset(op, "hbm"), rows=op.int_prop("rows"), cols=op.int_prop("cols"),
                row_stride=op.int_prop("row_stride"), col_stride=op.int_prop("col_stride"), dt_sram=_dt(op.dest),
                dt_hbm=_dt(op.source),
            )  # fmt: skip
        elif isinstance(op, tile.StoreOp):
            self._emit(
                "link_send" if isinstance(op, tile.LinkSendOp) else "dma_store", hbm_reg=reg(op, "hbm"),
                hbm_off=self._offset(op, "hbm"),
                **self._sram_operand(op, op.source), rows=op.int_prop("rows"),
                cols=op.int_prop("cols"), row_stride=op.int_prop("row_stride"), col_stride=op.int_prop("col_stride"),
                dt_hbm=_dt(op.dest), dt_sram=_dt(op.source),
            )  # fmt: skip
        elif isinstance(op, tile.DmaGatherOp):
            self._emit(
                "dma_gather", **self._sram_operand(op, op.dest), table_reg=reg(op, "table"),
                table_off=self._offset(op, "table"), ids_reg=reg(op, "ids"), ids_off=self._offset(op, "ids"),
                rows=op.int_prop("rows"), cols=op.int_prop("cols"),
                table_stride=op.int_prop("row_stride"), dt_sram=_dt(op.dest), dt_table=_dt(op.table),
                dt_ids=_dt(op.ids),
            )  # fmt: skip
        elif isinstance(op, tile.DmaScatterOp):
            self._emit(
                "dma_scatter", table_reg=reg(op, "table"), table_off=self._offset(op, "table"),
                **self._sram_operand(op, op.source), ids_reg=reg(op, "ids"), ids_off=self._offset(op, "ids"),
                rows=op.int_prop("rows"), cols=op.int_prop("cols"),
                table_stride=op.int_prop("row_stride"), dt_table=_dt(op.table), dt_sram=_dt(op.source),
                dt_ids=_dt(op.ids),
            )  # fmt: skip
        elif isinstance(op, tile.MatmulOp):
            self._emit(
                "mxu_matmul", c_reg=0, c_off=_sram(op.acc), a_reg=0, a_off=_sram(op.lhs), b_reg=0,
                b_off=_sram(op.rhs), m=op.int_prop("m"), n=op.int_prop("n"), k=op.int_prop("k"),
                accumulate=op.int_prop("accumulate"), dt_c=_dt(op.acc), dt_a=_dt(op.lhs), dt_b=_dt(op.rhs),
                batch=op.batch_count,
            )  # fmt: skip
        elif isinstance(op, tile.SignalOp | tile.WaitOp):
            self._emit(
                "signal" if isinstance(op, tile.SignalOp) else "wait", engine=op.engine.data, sem=op.int_prop("sem")
            )
        else:
            self._vector(op)

    def _vector(self, op: Operation) -> None:
        size = {"rows": op.int_prop("rows"), "cols": op.int_prop("cols")}  # type: ignore[attr-defined]
        if isinstance(op, tile.UnaryOp | tile.ReduceOp):
            mnemonic = "vpu_unary" if isinstance(op, tile.UnaryOp) else "vpu_reduce"
            self._emit(mnemonic, fn=op.fn.data, **_vec(op.dest, "d"), **_vec(op.source, "a"), **size)
        elif isinstance(op, tile.ScalarOp):
            value = op.value.value.data
            self._emit("vpu_scalar", fn=op.fn.data, **_vec(op.dest, "d"), **_vec(op.source, "a"), **size, value=value)
        elif isinstance(op, tile.BinaryOp):
            operands = _vec(op.dest, "d") | _vec(op.lhs, "a") | _vec(op.rhs, "b")
            self._emit("vpu_binary", fn=op.fn.data, broadcast=op.broadcast.data, **operands, **size)
        elif isinstance(op, tile.SelectOp):
            operands = _vec(op.dest, "d") | _vec(op.on_true, "a") | _vec(op.on_false, "b")
            self._emit("vpu_select", **operands, c_reg=0, c_off=_sram(op.cond), **size)
        elif isinstance(op, tile.ExpSumOp):
            operands = _vec(op.dest, "d") | _vec(op.source, "a") | _vec(op.row_max, "b")
            self._emit("vpu_exp_sum", **operands, c_reg=0, c_off=_sram(op.sums), **size)
        elif isinstance(op, tile.RopeOp):
            operands = _vec(op.dest, "d") | _vec(op.source, "a") | _vec(op.tables, "b")
            head_dim, roped = op.int_prop("head_dim"), op.int_prop("roped")
            self._emit("vpu_rope", **operands, **size, head_dim=head_dim, roped=roped)
        elif isinstance(op, tile.FillOp):
            self._emit("vpu_fill", **_vec(op.dest, "d"), **size, value=op.value.value.data)
        elif isinstance(op, tile.AllReduceOp):
            operands = _vec(op.dest, "d") | _vec(op.source, "a")
            self._emit("link_allreduce", **operands, chips=op.int_prop("chips"), **size)
        elif isinstance(op, tile.CausalMaskOp):
            self._emit(
                "vpu_causal", d_reg=0, d_off=_sram(op.dest), diag_reg=self._register(op, "diag"),
                diag_off=self._offset(op, "diag"),
                window=op.int_prop("window"), dt_d=_dt(op.dest), **size,
                period=op.period.value.data if op.period is not None else 0,
            )  # fmt: skip
        else:
            raise LoweringError(f"lower-to-isa cannot lower {op.name}")


def _addressed(op: Operation) -> dict[str, tuple[SSAValue | None, int, list[int], int]]:
    """Per address role of an op: (HBM buffer or None, element offset, loop strides, bytes per unit)."""
    if isinstance(op, tile.DmaLoadOp | tile.StoreOp):
        hbm, sram = (op.source, op.dest) if isinstance(op, tile.DmaLoadOp) else (op.dest, op.source)
        strides = tile.int_list(op.loop_strides)
        roles = {"hbm": (hbm, op.int_prop("offset"), strides, element_bytes(hbm.type.element_type))}
        if op.sram_loop_strides is not None:
            eb = element_bytes(sram.type.element_type)
            sram_strides = [s * eb for s in tile.int_list(op.sram_loop_strides)]
            roles["sram"] = (None, _sram(sram, op.int_prop("sram_offset")), sram_strides, 1)
        return roles
    if isinstance(op, tile.DmaGatherOp | tile.DmaScatterOp):
        sram = op.dest if isinstance(op, tile.DmaGatherOp) else op.source
        sram_role = {}
        if op.sram_loop_strides is not None:
            eb = element_bytes(sram.type.element_type)
            sram_strides = [s * eb for s in tile.int_list(op.sram_loop_strides)]
            sram_role["sram"] = (None, _sram(sram, op.int_prop("sram_offset")), sram_strides, 1)
        return sram_role | {
            "ids": (
                op.ids,
                op.int_prop("offset"),
                tile.int_list(op.loop_strides),
                element_bytes(op.ids.type.element_type),
            ),
            "table": (
                op.table,
                op.table_offset.value.data,
                tile.int_list(op.table_loop_strides),
                element_bytes(op.table.type.element_type),
            ),
        }
    if isinstance(op, tile.CausalMaskOp):
        return {"diag": (None, op.int_prop("diagonal"), tile.int_list(op.loop_strides), 1)}
    return {}


def _sram(value: SSAValue, element_offset: int = 0) -> int:
    owner = value.owner
    assert isinstance(owner, tile.SramBufferOp)
    base = owner.int_prop("offset")
    if base < 0:
        raise LoweringError("lower-to-isa needs placed SRAM tiles: run plan-sram first")
    return base + element_offset * element_bytes(value.type.element_type)


def _dt(value: SSAValue) -> str:
    return dtype_name(value.type.element_type)


def _vec(value: SSAValue, role: str) -> dict[str, int | str]:
    return {f"{role}_reg": 0, f"{role}_off": _sram(value), f"dt_{role}": _dt(value)}
