"""The persistent Machine: entry points sharing HBM (a KV cache), per-entry inputs and outputs, read / write."""

from __future__ import annotations

import numpy as np
import pytest

from tasic.backend.isa_spec import DType, Engine, Instr, Op, ReduceFn, float_bits
from tasic.backend.target import load_target
from tasic.backend.tbin import Symbol, TBinary
from tasic.isa_sim import Machine, SimError, simulate

TINY = load_target("tiny")
F32, I32 = DType.F32, DType.I32
# HBM: prompt rows and positions, one token row and its position, the KV cache, the row sums
PROMPT, PROMPT_POS, TOKEN, TOKEN_POS, CACHE, SUMS = 0, 64, 128, 192, 256, 512
SA, SB, SD = 0, 1024, 2048  # SRAM tiles


def load(sram: int, hbm: int, rows: int, cols: int) -> Instr:
    return Instr(Op.DMA_LOAD, dt_d=F32, dt_a=F32, rows=rows, cols=cols, off_d=sram, off_a=hbm, off_b=cols, imm=1)


def scatter(idx: int, rows: int) -> Instr:
    """Cache rows idx[i] <- SRAM tile SA row i."""
    return Instr(
        Op.DMA_SCATTER, dt_d=F32, dt_a=F32, dt_b=I32, rows=rows, cols=4, off_d=CACHE, off_a=SA, off_b=idx, imm=4
    )


def handoff(source: Engine, target: Engine, sem: int) -> list[Instr]:
    return [Instr(Op.SIGNAL, func=source, imm=sem), Instr(Op.WAIT, func=target, imm=sem)]


def kv_binary(entries: bool = True) -> TBinary:
    """prefill: scatter the prompt rows into the cache; decode: scatter one token row, return the cache's row sums."""
    prefill = [
        load(SA, PROMPT, 2, 4),
        *handoff(Engine.DMA_LOAD, Engine.DMA_STORE, 0),
        scatter(PROMPT_POS, 2),
        Instr(Op.HALT),
    ]
    decode = [
        load(SA, TOKEN, 1, 4),
        *handoff(Engine.DMA_LOAD, Engine.DMA_STORE, 0),
        scatter(TOKEN_POS, 1),
        *handoff(Engine.DMA_STORE, Engine.DMA_LOAD, 1),
        load(SB, CACHE, 8, 4),
        *handoff(Engine.DMA_LOAD, Engine.VPU, 2),
        Instr(Op.VPU_REDUCE, func=ReduceFn.SUM, dt_d=F32, dt_a=F32, rows=8, cols=4, off_d=SD, off_a=SB),
        *handoff(Engine.VPU, Engine.DMA_STORE, 3),
        Instr(Op.DMA_STORE, dt_d=F32, dt_a=F32, rows=8, cols=1, off_d=SUMS, off_a=SD, off_b=1, imm=1),
        Instr(Op.HALT),
    ]
    symbols = [
        Symbol("prompt", "input", PROMPT, (2, 4), "f32"),
        Symbol("prompt_pos", "input", PROMPT_POS, (2,), "i32"),
        Symbol("token", "input", TOKEN, (1, 4), "f32"),
        Symbol("token_pos", "input", TOKEN_POS, (1,), "i32"),
        Symbol("cache", "kv", CACHE, (8, 4), "f32"),
        Symbol("sums", "output", SUMS, (8, 1), "f32"),
    ]
    metadata: dict[str, object] = {"hbm_bytes": 1024}
    if entries:
        metadata["entries"] = {
            "prefill": {"inputs": {"x": "prompt", "pos": "prompt_pos"}},
            "decode": {"inputs": {"x": "token", "pos": "token_pos"}, "outputs": {"row_sums": "sums"}},
        }
    # the constants image covers the cache with garbage: the machine zeroes kv symbols when it is made
    constants = np.full(CACHE + 8 * 4 * 4, 7, np.uint8).tobytes()
    points = {"prefill": 0, "decode": len(prefill)}
    return TBinary(TINY.name, TINY.hash, prefill + decode, constants, symbols, points, metadata)


def positions(*values: int) -> np.ndarray:
    return np.array(values, np.int32)


def test_prefill_then_decode_share_the_kv_cache() -> None:
    machine = Machine(kv_binary(), TINY)
    assert not machine.read("cache").any()
    prompt = np.arange(8, dtype=np.float32).reshape(2, 4)
    result = machine.run("prefill", {"x": prompt, "pos": positions(0, 1)})
    assert result.outputs == {}
    tokens = []
    for step in range(2, 5):
        token = np.full((1, 4), step, np.float32)
        tokens.append(token)
        result = machine.run("decode", {"x": token, "pos": positions(step)})
        expected = np.zeros((8, 4), np.float32)
        expected[: step + 1] = np.concatenate([prompt, *tokens])
        np.testing.assert_array_equal(machine.read("cache"), expected)
        np.testing.assert_array_equal(result.outputs["row_sums"], expected.sum(axis=1, keepdims=True))
        assert list(result.outputs) == ["row_sums"]
    # each run is timed on its own, from cycle 0
    assert (
        result.report.total_cycles == machine.run("decode", {"x": tokens[0], "pos": positions(5)}).report.total_cycles
    )


def test_write_and_read_symbols() -> None:
    machine = Machine(kv_binary(), TINY)
    cache = np.arange(32, dtype=np.float32).reshape(8, 4)
    machine.write("cache", cache)
    result = machine.run("decode", {"x": np.zeros((1, 4), np.float32), "pos": positions(7)})
    cache[7] = 0
    np.testing.assert_array_equal(result.outputs["row_sums"], cache.sum(axis=1, keepdims=True))
    machine.write("token_pos", np.array([3]))  # int64 values that fit are converted to i32
    np.testing.assert_array_equal(machine.read("token_pos"), [3])
    with pytest.raises(SimError, match=r"symbol 'cache' has shape \(4, 8\), expected \(8, 4\)"):
        machine.write("cache", cache.T)
    with pytest.raises(SimError, match="unknown symbol 'nope'"):
        machine.read("nope")


def test_sram_registers_and_semaphores_reset_per_run() -> None:
    code = [
        Instr(Op.VPU_FILL, dt_d=F32, rows=1, cols=4, off_d=SA, imm=float_bits(2.0)),
        Instr(Op.SIGNAL, func=Engine.VPU, imm=0),  # a token left over: the next run must not see it
        Instr(Op.HALT),
        Instr(Op.ADDI, reg_d=1, reg_a=1, off_b=16),
        Instr(Op.DMA_STORE, dt_d=F32, dt_a=F32, rows=1, cols=4, reg_d=1, off_a=SA, off_b=4, imm=1),
        Instr(Op.HALT),
        Instr(Op.WAIT, func=Engine.DMA_STORE, imm=0),
        Instr(Op.HALT),
    ]
    symbols = [Symbol("out", "output", 0, (12,), "f32")]
    points = {"fill": 0, "peek": 3, "wait": 6}
    machine = Machine(TBinary(TINY.name, TINY.hash, code, b"", symbols, points, {"hbm_bytes": 48}), TINY)
    machine.write("out", np.full(12, 5, np.float32))
    machine.run("fill")
    machine.run("peek")
    result = machine.run("peek")  # r1 starts at 0 again: the same four elements, zeros from the fresh SRAM
    np.testing.assert_array_equal(result.outputs["out"], [5] * 4 + [0] * 4 + [5] * 4)
    machine.run("fill")
    with pytest.raises(SimError, match=r"deadlock: DMA_STORE is stuck at instruction 6 \(wait\) on semaphore s0"):
        machine.run("wait")


def test_entry_inputs_are_checked_by_their_names() -> None:
    machine = Machine(kv_binary(), TINY)
    token = np.zeros((1, 4), np.float32)
    with pytest.raises(SimError, match=r"missing input.*pos"):
        machine.run("decode", {"x": token})
    with pytest.raises(SimError, match=r"unknown input\(s\): token \(expected: pos, x\)"):
        machine.run("decode", {"x": token, "pos": positions(0), "token": token})
    with pytest.raises(SimError, match=r"input 'x' has shape \(2, 4\), expected \(1, 4\)"):
        machine.run("decode", {"x": np.zeros((2, 4), np.float32), "pos": positions(0)})
    with pytest.raises(SimError, match=r"unknown entry point 'generate' \(have: decode, prefill\)"):
        machine.run("generate")
    machine.run("decode", {"x": token, "pos": positions(7)})  # the cache's last row
    with pytest.raises(SimError, match="write of row 8 of 'cache', which has rows 0 to 7 here"):  # HBM goes on
        machine.run("decode", {"x": token, "pos": positions(8)})


def test_without_entries_metadata_inputs_and_outputs_are_the_symbols() -> None:
    machine = Machine(kv_binary(entries=False), TINY)
    inputs = {
        "prompt": np.ones((2, 4), np.float32),
        "prompt_pos": positions(0, 1),
        "token": np.ones((1, 4), np.float32),
        "token_pos": positions(2),
    }
    result = machine.run("decode", inputs)
    assert list(result.outputs) == ["sums"]
    np.testing.assert_array_equal(result.outputs["sums"][:, 0], [0, 0, 4, 0, 0, 0, 0, 0])
    with pytest.raises(SimError, match="missing input"):
        machine.run("decode", {"token": inputs["token"], "token_pos": inputs["token_pos"]})
    np.testing.assert_array_equal(
        simulate(kv_binary(False), TINY, inputs, entry="decode").outputs["sums"], result.outputs["sums"]
    )


def test_entry_not_listed_in_entries_has_no_inputs_or_outputs() -> None:
    binary = kv_binary()
    binary.entry_points["again"] = binary.entry_points["decode"]
    machine = Machine(binary, TINY)
    machine.write("token", np.full((1, 4), 3, np.float32))
    machine.write("token_pos", positions(1))
    assert machine.run("again").outputs == {}
    assert machine.read("cache")[1].tolist() == [3, 3, 3, 3]


def test_bad_entries_metadata() -> None:
    binary = kv_binary()
    binary.metadata["entries"]["decode"]["outputs"] = {"row_sums": "nope"}
    with pytest.raises(SimError, match=r"metadata entries\['decode'\].outputs\['row_sums'\] = 'nope' is not a symbol"):
        Machine(binary, TINY)


def test_timing_only_machine() -> None:
    binary = kv_binary()
    machine = Machine(binary, TINY, timing_only=True)
    result = machine.run("decode")  # no inputs needed; the position in HBM is 0
    assert result.outputs == {}
    full = Machine(binary, TINY).run("decode", {"x": np.ones((1, 4), np.float32), "pos": positions(3)})
    assert result.report.total_cycles == full.report.total_cycles
    assert not machine.read("cache").any()  # nothing is computed
    machine.write("token_pos", positions(49))  # indices come from HBM: written values are checked
    with pytest.raises(SimError, match="write of row 49 of 'cache', which has rows 0 to 7 here"):
        machine.run("decode")
    with pytest.raises(SimError, match="write of row 8 of 'cache', which has rows 0 to 7 here"):
        machine.run("decode", {"x": np.ones((1, 4), np.float32), "pos": positions(8)})
    with pytest.raises(SimError, match="missing input"):  # given inputs are checked
        machine.run("decode", {"x": np.ones((1, 4), np.float32)})
