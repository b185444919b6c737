"""insert-sync: every dependency is ordered, tokens match exactly, and fewer tokens than a barrier per kernel.

`check_sync` replays a synchronised module: it unrolls the loops of each function, matches every
wait with the oldest unmatched signal of its semaphore (as the hardware does), propagates vector
clocks through the matches and asserts that every pair of engine ops touching the same memory
(SRAM bytes of whole tiles; the HBM bytes of each DMA window in its own iteration, computed here
independently of the pass; one of them writing) is ordered in program order.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, SSAValue
from xdsl.parser import Parser

from tasic.backend.target import load_target
from tasic.compiler import default_pipeline, run_pipeline
from tasic.frontend.llama_step import BatchStep, LlamaConfig, build_step
from tasic.ir import tile
from tasic.ir.dialects import tasic_context
from tasic.passes.insert_sync import ENGINES, InsertSyncPass, leaf_of
from tasic.passes.tiling.dtypes import element_bytes

VARIANTS = [
    "insert-sync",
    "insert-sync{kernel_barriers=true}",
    "insert-sync{transitive=false}",
    "insert-sync{kernel_barriers=true transitive=false}",
]
CONFIGS = Path(__file__).parents[1] / "frontend" / "configs"
SMALL = LlamaConfig(
    name="small", hidden=128, layers=2, heads=4, kv_heads=2, head_dim=32, ffn=256, vocab=512,
    rms_eps=1e-5, rope_theta=10000.0, max_context=128,
)  # fmt: skip
SMALL_STEP = BatchStep(prefill=40, decode_groups=((3, 50), (2, 90)))

Span = tuple[str, object, int, int]
"""(memory kind, SRAM None or HBM buffer name, first byte, end byte)."""


def _sync_ops(block: Block, iterations: tuple[int, ...] = ()) -> Iterator[tuple[Operation, tuple[int, ...]]]:
    """Every op of the block in execution order, with the iteration of each enclosing loop."""
    for op in block.ops:
        if isinstance(op, tile.LoopOp):
            for i in range(op.count.value.data):
                yield from _sync_ops(op.body.block, (*iterations, i))
        elif not isinstance(op, tile.SramBufferOp):
            yield op, iterations


def _hbm(value: SSAValue, first: int, last: int) -> Span:
    """Elements first..last of an HBM buffer as a byte span (the buffers of one name share their bytes)."""
    owner = value.owner
    name = owner.sym.data if isinstance(owner, tile.HbmBufferOp) else value
    element = element_bytes(value.type.element_type)  # type: ignore[attr-defined]
    return ("hbm", name, first * element, (last + 1) * element)


def _window(op: Operation, value: SSAValue, iterations: tuple[int, ...], indexed: bool = False) -> Span:
    """The HBM bytes of a DMA window in this iteration: an indexed op's index rows, else rows x cols."""
    first = op.int_prop("offset") + sum(i * s for i, s in zip(iterations, tile.int_list(op.loop_strides), strict=True))
    rows, cols = op.int_prop("rows"), op.int_prop("cols")
    reaches = (
        [rows - 1] if indexed else [(rows - 1) * op.int_prop("row_stride"), (cols - 1) * op.int_prop("col_stride")]
    )
    low = first + sum(min(0, r) for r in reaches)
    return _hbm(value, low, first + sum(max(0, r) for r in reaches))


def _whole(value: SSAValue) -> Span:
    return _hbm(value, 0, 1 << 60)


def accesses(op: Operation, iterations: tuple[int, ...]) -> tuple[str, list[Span], list[Span]] | None:
    """Engine, reads and writes of one execution of an engine op (None for other ops)."""
    leaf = leaf_of(op)
    if leaf is None:
        return None
    reads = [r for r in leaf.reads if r[0] == "sram"]
    writes = [w for w in leaf.writes if w[0] == "sram"]
    if isinstance(op, tile.DmaLoadOp):
        reads.append(_window(op, op.source, iterations))
    elif isinstance(op, tile.DmaStoreOp | tile.LinkSendOp):
        writes.append(_window(op, op.dest, iterations))
    elif isinstance(op, tile.DmaGatherOp):
        reads += [_whole(op.table), _window(op, op.ids, iterations, indexed=True)]
    elif isinstance(op, tile.DmaScatterOp):
        reads.append(_window(op, op.ids, iterations, indexed=True))
        writes.append(_whole(op.table))
    return leaf.engine, reads, writes


def _overlap(a: Span, b: Span) -> bool:
    return a[0] == b[0] and a[1] == b[1] and a[2] < b[3] and b[2] < a[3]  # type: ignore[operator]


def _conflict(first: tuple[str, list[Span], list[Span]], second: tuple[str, list[Span], list[Span]]) -> bool:
    _, reads_a, writes_a = first
    _, reads_b, writes_b = second
    return any(_overlap(w, x) for w in writes_a for x in reads_b + writes_b) or any(
        _overlap(x, w) for x in reads_a for w in writes_b
    )


def _memories(spans: list[Span]) -> set[object]:
    return {(kind, name) for kind, name, *_ in spans}


def check_sync(module: ModuleOp) -> tuple[int, int]:
    """Assert that the tokens order every conflict and match exactly; (dynamic engine ops, sync ops)."""
    ops = syncs = 0
    for function in module.body.block.ops:
        kernels = [k for k in function.walk() if isinstance(k, tile.KernelOp)]
        clocks = [[0] * len(ENGINES) for _ in ENGINES]
        tokens: dict[int, deque[list[int]]] = {}
        engines_of: dict[tuple[int, str], str] = {}
        # per memory: the executions that touched it so far, (accesses, engine index, stamp), latest last
        history: dict[object, list[tuple[tuple[str, list[Span], list[Span]], int, int]]] = {}
        for kernel in kernels:
            for op, iterations in _sync_ops(kernel.body.block):
                if isinstance(op, tile.SignalOp | tile.WaitOp):
                    syncs += 1
                    sem, engine = op.int_prop("sem"), ENGINES.index(op.engine.data)
                    role = "signal" if isinstance(op, tile.SignalOp) else "wait"
                    owner = engines_of.setdefault((sem, role), op.engine.data)
                    assert owner == op.engine.data, f"s{sem}: {role} by {owner} and {op.engine.data}"
                    if isinstance(op, tile.SignalOp):
                        tokens.setdefault(sem, deque()).append(list(clocks[engine]))
                    else:
                        assert tokens.get(sem), f"{kernel.loc.data}: wait on s{sem} before its signal"
                        clocks[engine] = [max(a, b) for a, b in zip(clocks[engine], tokens[sem].popleft(), strict=True)]
                    continue
                this = accesses(op, iterations)
                if this is None:
                    continue
                ops += 1
                engine = ENGINES.index(this[0])
                clocks[engine][engine] += 1
                memories = _memories(this[1] + this[2])
                for memory in memories:
                    checked = {engine}  # per other engine its latest conflicting execution: earlier ones precede it
                    for other, other_engine, stamp in reversed(history.get(memory, [])):
                        if other_engine in checked or not _conflict(other, this):
                            continue
                        checked.add(other_engine)
                        assert clocks[engine][other_engine] >= stamp, (
                            f"{kernel.loc.data}: an op on {ENGINES[other_engine]} and {op.name} on"
                            f" {ENGINES[engine]} are not ordered"
                        )
                for memory in memories:
                    history.setdefault(memory, []).append((this, engine, clocks[engine][engine]))
        assert not any(tokens.values()), "tokens left over at the end"
    return ops, syncs


def _step(config: LlamaConfig, step: BatchStep, target: str, tp: int, sync: str) -> ModuleOp:
    graph = build_step(config, step)
    pipeline = default_pipeline(load_target(target).spec, "bf16", tp).replace("insert-sync", sync)
    run_pipeline(graph.module, pipeline.replace(",lower-to-isa", ""))
    return graph.module


@pytest.mark.parametrize("sync", VARIANTS)
def test_small_llama_step_is_synchronised(sync: str) -> None:
    """A 2-layer Llama serving step (prefill, two decode groups, TP 2) on the tiny target."""
    check_sync(_step(SMALL, SMALL_STEP, "tiny", 2, sync))


@pytest.mark.parametrize("sync", VARIANTS[:2])
def test_llama_70b_layer_is_synchronised(sync: str) -> None:
    """One Llama-3-70B layer on sohu-like, TP 8: large tiles, double-buffered loops, nested loops."""
    config = dataclasses.replace(LlamaConfig.load(str(CONFIGS / "llama-3-70b.json")), layers=1)
    check_sync(_step(config, BatchStep.seed(), "sohu-like", 8, sync))


def test_fewer_tokens_than_barriers() -> None:
    """Pruned tokens and no barriers: fewer dynamic signal/wait ops than one token per dependency.

    Measured 492 against 834 (0.59) with q/k/v and gate/up fused; without pruning, and no barriers,
    694: kernels alternating SRAM halves (plan-sram) depend on each other through HBM with tokens
    of their own, so pruning alone removes less than the barriers' and pruning's sum.
    """
    _, pruned = check_sync(_step(SMALL, SMALL_STEP, "tiny", 2, "insert-sync"))
    _, barriers = check_sync(_step(SMALL, SMALL_STEP, "tiny", 2, "insert-sync{kernel_barriers=true transitive=false}"))
    assert pruned < 0.7 * barriers


_DMA = "rows = 2 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, sram_offset = 0 : i64"
_TILE = 'memref<2x16xf32, "sram">'
NESTED_TOKENS = f"""
func.func @main() {{
  %x = tile.hbm {{name = "x", kind = "input"}} : memref<2x16xf32, "hbm">
  %z = tile.hbm {{name = "z", kind = "input"}} : memref<8x16xf32, "hbm">
  %y = tile.hbm {{name = "y", kind = "output"}} : memref<4x16xf32, "hbm">
  tile.kernel "k" {{
    %a = tile.sram {{offset = 0 : i64}} : {_TILE}
    %b = tile.sram {{offset = 1024 : i64}} : {_TILE}
    %c = tile.sram {{offset = 2048 : i64}} : {_TILE}
    tile.loop 2 : i64 {{
      tile.dma_load %x, %a {{{_DMA}, loop_strides = [0 : i64]}} : memref<2x16xf32, "hbm">, {_TILE}
      tile.loop 4 : i64 {{
        tile.dma_load %z, %b {{{_DMA}, loop_strides = [0 : i64, 32 : i64]}} : memref<8x16xf32, "hbm">, {_TILE}
        tile.unary %b, %b {{fn = "exp", rows = 2 : i64, cols = 16 : i64}} : {_TILE}, {_TILE}
      }}
      tile.unary %a, %c {{fn = "exp", rows = 2 : i64, cols = 16 : i64}} : {_TILE}, {_TILE}
      tile.dma_store %c, %y {{{_DMA}, loop_strides = [32 : i64]}} : {_TILE}, memref<4x16xf32, "hbm">
    }}
  }}
  func.return
}}
"""


@pytest.mark.parametrize("options", [{}, {"transitive": False}, {"kernel_barriers": True, "transitive": False}])
@pytest.mark.parametrize("outer_loop", [False, True])
def test_tokens_around_a_loop_with_tokens_of_the_same_semaphore(options: dict[str, bool], outer_loop: bool) -> None:
    """Load -> VPU tokens inside a loop, and one from before it to after it: first-in first-out
    matching must not let the loop's first wait take the outer token (the old pass did, at the top
    level of a kernel; inside a loop body the pass moves such a wait up to before the loop)."""
    text = NESTED_TOKENS
    if not outer_loop:  # the same ops at the kernel's top level
        text = text.replace("tile.loop 2 : i64 {", "tile.loop 1 : i64 {")
    module = Parser(tasic_context(), text).parse_module()
    InsertSyncPass(**options).apply(tasic_context(), module)
    check_sync(module)


def test_check_sync_finds_a_missing_token() -> None:
    """The checker is not vacuous: dropping one forward wait (and its signal) is a race."""
    module = _step(SMALL, SMALL_STEP, "tiny", 2, "insert-sync")
    wait = next(o for o in module.walk() if isinstance(o, tile.WaitOp) and o.int_prop("sem") >= 40)
    signal = next(
        o for o in module.walk() if isinstance(o, tile.SignalOp) and o.int_prop("sem") == wait.int_prop("sem")
    )
    wait.detach()
    signal.detach()
    with pytest.raises(AssertionError, match="not ordered"):
        check_sync(module)
