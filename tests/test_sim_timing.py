"""Cycle counts of the ISA simulator against hand-computed cases of docs/isa.md (Timing)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from tasic.backend.isa_spec import BinaryFn, DType, Engine, Instr, Op, UnaryFn, float_bits
from tasic.backend.target import Memory, Target, load_target
from tasic.backend.tbin import TBinary
from tasic.isa_sim import SimError, simulate, simulate_timing, write_chrome_trace
from tasic.isa_sim import simulator as simulator_module

# tiny: 1 GHz, 16x16 pipelined MXU, 16 VPU lanes (latency 4), HBM 64 bytes/cycle with latency 100.
TINY = load_target("tiny")
F32, BF16 = DType.F32, DType.BF16


def make_binary(code: list[Instr], target: Target = TINY, **metadata: object) -> TBinary:
    """A binary of `code` followed by HALT, with 64 KiB of HBM."""
    meta = {"hbm_bytes": 1 << 16, **metadata}
    return TBinary(target.name, target.hash, [*code, Instr(Op.HALT)], b"", [], metadata=meta)


def cycles(code: list[Instr], target: Target = TINY) -> int:
    """Total cycles of the full simulation, checked against the timing-only path."""
    binary = make_binary(code, target)
    full = simulate(binary, target).report.total_cycles
    assert simulate_timing(binary, target).total_cycles == full
    return full


def fill(rows: int = 16, cols: int = 16, addr: int = 0) -> Instr:
    return Instr(Op.VPU_FILL, dt_d=F32, rows=rows, cols=cols, off_d=addr, imm=float_bits(1.0))


def matmul(m: int, n: int, k: int, dt: int = F32, d: int = 0, a: int = 0, b: int = 0) -> Instr:
    return Instr(Op.MXU_MATMUL, dt_d=F32, dt_a=dt, dt_b=dt, rows=m, cols=n, depth=k, off_d=d, off_a=a, off_b=b)


def load(rows: int = 16, cols: int = 16, sram: int = 0, hbm: int = 0) -> Instr:
    return Instr(Op.DMA_LOAD, dt_d=F32, dt_a=F32, rows=rows, cols=cols, off_d=sram, off_a=hbm, off_b=cols, imm=1)


def store(rows: int = 16, cols: int = 16, hbm: int = 0, sram: int = 0) -> Instr:
    return Instr(Op.DMA_STORE, dt_d=F32, dt_a=F32, rows=rows, cols=cols, off_d=hbm, off_a=sram, off_b=cols, imm=1)


def signal(engine: Engine, sem: int) -> Instr:
    return Instr(Op.SIGNAL, func=engine, imm=sem)


def wait(engine: Engine, sem: int) -> Instr:
    return Instr(Op.WAIT, func=engine, imm=sem)


def big_mxu(pipelined: bool, count: int = 1) -> Target:
    """tiny with one (or `count`) 128x128 arrays and 16 MiB of SRAM."""
    mxu = dataclasses.replace(TINY.mxu, rows=128, cols=128, pipelined=pipelined, count=count)
    return dataclasses.replace(TINY, mxu=mxu, sram=Memory(bytes=1 << 24, bandwidth=TINY.sram.bandwidth))


def test_gemm_scale_sim_example_non_pipelined() -> None:
    # 32 folds x (1024 + 128 + 128 - 2) = 40,896 (docs/isa.md)
    a, b = 0, 512 * 1024 * 2
    gemm = matmul(512, 1024, 1024, BF16, d=b + 1024 * 1024 * 2, a=a, b=b)
    assert cycles([gemm], big_mxu(pipelined=False)) == 40_896


def test_gemm_pipelined_and_multi_array() -> None:
    gemm = matmul(512, 1024, 1024, BF16, d=1 << 22, b=1 << 21)
    assert simulate_timing(make_binary([gemm], big_mxu(True)), big_mxu(True)).total_cycles == 32 * 1024 + 254
    # 32 folds over 3 arrays: ceil(32 / 3) = 11 folds in sequence
    target = big_mxu(False, count=3)
    assert simulate_timing(make_binary([gemm], target), target).total_cycles == 11 * 1278


def test_mxu_rate_per_dtype() -> None:
    # f8 streams 2 MACs per PE per cycle: T = ceil(40 / 2) = 20; two folds of 16 columns
    f8 = matmul(16, 32, 40, DType.F8E4M3, d=4096, b=1024)
    assert cycles([f8]) == 2 * 20 + 30


def test_vpu_cost_classes() -> None:
    exp = Instr(Op.VPU_UNARY, func=UnaryFn.EXP, dt_d=F32, dt_a=F32, rows=16, cols=17, off_d=2048)
    assert cycles([exp]) == 17 * 4 + 4
    reduce = Instr(Op.VPU_REDUCE, dt_d=F32, dt_a=F32, rows=16, cols=16, off_d=2048)
    assert cycles([reduce]) == 16 + 4
    add = Instr(Op.VPU_BINARY, func=BinaryFn.ADD, dt_d=F32, dt_a=F32, dt_b=F32, rows=4, cols=4)
    assert cycles([add]) == 1 + 4
    # the softmax's subtract, exponential and row sum in one pass, at the exponential's rate
    exp_sum = Instr(Op.VPU_EXP_SUM, dt_d=BF16, dt_a=F32, dt_b=F32, rows=16, cols=17, off_a=4096, off_b=8192, imm=9216)
    assert cycles([exp_sum]) == cycles([exp])
    # rope: three simple passes over the rotated columns (16 x 16 of them), the rest left in place ...
    rope = Instr(Op.VPU_ROPE, dt_d=F32, dt_a=F32, dt_b=F32, rows=16, cols=24, depth=16, imm=8, off_b=4096)
    assert cycles([rope]) == 3 * 16 + 4
    # ... or copied (16 x 8 more, one pass) into another tile
    assert cycles([dataclasses.replace(rope, off_d=2048)]) == 3 * 16 + 8 + 4


def test_independent_engines_overlap() -> None:
    # fill: 16 lane groups + 4 = 20 cycles from 0; matmul dispatched at 1: 16 + 30 = 46 cycles
    assert cycles([fill(), matmul(16, 16, 16, d=4096)]) == 1 + 46


def test_signal_wait_serialises() -> None:
    code = [fill(), signal(Engine.VPU, 0), wait(Engine.MXU, 0), matmul(16, 16, 16, d=4096)]
    assert cycles(code) == 20 + 46


def test_dma_latency_and_bandwidth() -> None:
    # 16 x 16 x 4 bytes at 64 bytes/cycle = 16 cycles on the channel, complete 100 cycles later
    assert cycles([load()]) == 16 + 100
    odd = Instr(Op.DMA_LOAD, dt_d=F32, dt_a=BF16, rows=3, cols=11, off_b=11, imm=1)
    assert cycles([odd]) == 2 + 100  # 66 bytes -> ceil(66 / 64)


def test_dmas_share_the_hbm_channel() -> None:
    assert cycles([load(), load(sram=1024, hbm=1024)]) == 32 + 100
    assert cycles([load(), store(hbm=4096, sram=4096)]) == 32 + 100


def test_scatter_moves_its_table_dtype_on_the_shared_channel() -> None:
    # 4 rows x 64 bf16 = 512 bytes on the HBM channel: 8 cycles, after the load's 16
    scatter = Instr(
        Op.DMA_SCATTER, dt_d=BF16, dt_a=F32, dt_b=DType.I32, rows=4, cols=64, off_d=8192, off_a=4096, imm=64
    )
    assert cycles([scatter]) == 8 + 100
    report = simulate(make_binary([load(), scatter]), TINY, trace=True).report
    assert report.total_cycles == 16 + 8 + 100
    assert report.hbm_bytes == 1024 + 512
    assert report.busy["DMA_STORE"] == 8
    assert [(e.engine, e.name, e.start, e.end) for e in report.trace] == [
        ("DMA_LOAD", "dma.load", 0, 16),
        ("DMA_STORE", "dma.scatter", 16, 24),
    ]


SOHU = load_target("sohu-like")


def send(rows: int, cols: int, hbm: int = 0, sram: int = 0, dt_hbm: int = BF16) -> Instr:
    """link.send of an f32 SRAM tile into a dense HBM window of dtype `dt_hbm` (on the next chip)."""
    return Instr(Op.LINK_SEND, dt_d=dt_hbm, dt_a=F32, rows=rows, cols=cols, off_d=hbm, off_a=sram, off_b=cols, imm=1)


def test_peer_link_bandwidth_is_a_share_of_all_to_all_links() -> None:
    # sohu-like: 1.8 TB/s per chip over 7 peers at 1.2 GHz; a switch gives one peer every link
    assert SOHU.peer_link_bytes_per_cycle == pytest.approx(1.8e12 / 7 / 1.2e9)
    h100 = load_target("h100-like")
    assert h100.peer_link_bytes_per_cycle == h100.link_bytes_per_cycle
    assert dataclasses.replace(SOHU, chips=1).peer_link_bytes_per_cycle == SOHU.link_bytes_per_cycle


def test_link_send_latency_and_per_peer_bandwidth() -> None:
    # 16 x 100 bf16 = 3,200 bytes at 1.8e12 / 7 / 1.2e9 = 214.3 bytes/cycle: 15 cycles, after 1,200 of latency
    per_peer = SOHU.links.bandwidth / (SOHU.chips - 1) / SOHU.clock_hz
    expected = SOHU.links.latency + math.ceil(16 * 100 * 2 / per_peer)
    assert expected == 1200 + 15
    assert cycles([send(16, 100)], SOHU) == expected
    assert cycles([send(16, 100, dt_hbm=F32)], SOHU) == 1200 + 30  # 6,400 bytes: the HBM dtype is what is sent


def test_link_send_occupies_the_link_engine_not_the_hbm_channel() -> None:
    code = [send(16, 100), store(hbm=8192, sram=8192), send(16, 100, hbm=16384)]
    report = simulate(make_binary(code, SOHU), SOHU, trace=True).report
    assert [(e.engine, e.name, e.start, e.end) for e in report.trace] == [
        ("LINK", "link.send", 0, 1215),
        ("DMA_STORE", "dma.store", 1, 2),  # 1,024 bytes at 4,000 bytes/cycle, beside the send
        ("LINK", "link.send", 1215, 2430),  # in order behind the first send on the one LINK engine
    ]
    assert report.busy == {"DMA_LOAD": 0, "DMA_STORE": 1, "MXU": 0, "VPU": 0, "LINK": 2 * 1215}
    assert report.hbm_bytes == 1024  # the sends write the next chip's HBM: not this chip's channel
    assert report.link_bytes == 2 * 3200
    assert report.link_utilization == pytest.approx(6400 / (report.total_cycles * SOHU.link_bytes_per_cycle))


def test_link_send_needs_link_bandwidth() -> None:
    no_links = dataclasses.replace(TINY, links=dataclasses.replace(TINY.links, bandwidth=0.0))
    with pytest.raises(SimError, match=r"instruction 0: invalid link.send: target tiny has no chip-to-chip link"):
        simulate_timing(make_binary([send(1, 4)], no_links), no_links)


def test_signal_does_not_stall_its_engine() -> None:
    # the signal after the first load fires at 116, but the second load still takes the channel at 16
    code = [load(), signal(Engine.DMA_LOAD, 0), load(sram=1024), wait(Engine.VPU, 0), fill(addr=4096)]
    report = simulate(make_binary(code), TINY, trace=True).report
    assert report.total_cycles == 116 + 20
    assert [(e.name, e.start, e.end) for e in report.trace if e.engine == "DMA_LOAD"] == [
        ("dma.load", 0, 16),
        ("signal s0", 116, 116),
        ("dma.load", 16, 32),
    ]


def test_later_transfer_fills_an_earlier_gap_on_the_channel() -> None:
    # the store waits for the VPU (ready at 20) and takes [20, 36); the load dispatched at 4
    # is ready earlier and fits in [4, 20)
    code = [fill(), signal(Engine.VPU, 0), wait(Engine.DMA_STORE, 0), store(), load(sram=4096)]
    binary = make_binary(code)
    report = simulate(binary, TINY, trace=True).report
    assert report.total_cycles == 36 + 100
    spans = {event.name: (event.start, event.end) for event in report.trace}
    assert spans["dma.load"] == (4, 20)
    assert spans["dma.store"] == (20, 36)


def test_signal_waits_for_dma_data() -> None:
    # the load's data is complete at 116; the VPU starts then
    code = [load(), signal(Engine.DMA_LOAD, 3), wait(Engine.VPU, 3), fill(addr=4096)]
    assert cycles(code) == 116 + 20


def test_wait_before_signal_in_program_order() -> None:
    # the VPU's wait is dispatched first and blocks until the load (dispatched at 2) signals at 118
    code = [wait(Engine.VPU, 0), fill(addr=4096), load(), signal(Engine.DMA_LOAD, 0)]
    assert cycles(code) == 2 + 116 + 20


def test_tokens_are_counted() -> None:
    # two signals, two waits: the second fill waits for the second token, not the first
    code = [
        fill(),
        signal(Engine.VPU, 1),
        fill(),
        signal(Engine.VPU, 1),
        wait(Engine.MXU, 1),
        matmul(16, 16, 16, d=4096),
        wait(Engine.MXU, 1),
        matmul(16, 16, 16, d=8192),
    ]
    # fills end at 20 and 40; matmuls [20, 66) and [66, 112)
    assert cycles(code) == 112


def test_issue_rate() -> None:
    code = [Instr(Op.ADDI, reg_d=1, reg_a=1, off_b=1)] * 9 + [fill()]
    assert cycles(code) == 9 + 20
    wide = dataclasses.replace(TINY, issue_per_cycle=4)
    assert cycles(code, wide) == 2 + 20


def test_looped_program_timing_only_matches_full() -> None:
    # 8 iterations: load a 16x16 tile, negate it on the VPU, store it back; addresses advance by 1 KiB
    body = [
        wait(Engine.DMA_LOAD, 2),
        Instr(Op.DMA_LOAD, dt_d=F32, dt_a=F32, rows=16, cols=16, reg_a=1, off_b=16, imm=1),
        signal(Engine.DMA_LOAD, 0),
        wait(Engine.VPU, 0),
        Instr(Op.VPU_UNARY, func=UnaryFn.NEG, dt_d=F32, dt_a=F32, rows=16, cols=16, off_d=1024),
        signal(Engine.VPU, 1),
        signal(Engine.VPU, 2),
        wait(Engine.DMA_STORE, 1),
        Instr(Op.DMA_STORE, dt_d=F32, dt_a=F32, rows=16, cols=16, reg_d=1, off_d=32768, off_a=1024, off_b=16, imm=1),
        Instr(Op.ADDI, reg_d=1, reg_a=1, off_b=1024),
    ]
    code = [signal(Engine.VPU, 2), Instr(Op.LOOP, off_b=8), *body, Instr(Op.ENDLOOP)]
    binary = make_binary(code)
    full = simulate(binary, TINY).report
    timing = simulate_timing(binary, TINY)
    assert full.total_cycles == timing.total_cycles
    assert full.instructions == timing.instructions == 1 + 1 + 8 * 11 + 1
    assert full.busy == timing.busy
    # each iteration: load 16 + 100, VPU 20, store 16 + 100, loads wait for the previous VPU op
    assert full.total_cycles > 8 * (116 + 20)


def test_report_figures_and_per_op_breakdown(tmp_path: Path) -> None:
    code = [load(), signal(Engine.DMA_LOAD, 0), wait(Engine.MXU, 0), matmul(16, 16, 16, d=4096), fill(addr=8192)]
    locs = ["model.py:3 linear", "model.py:4 fill"]
    binary = make_binary(code, locs=locs, instr_locs=[0, 0, 0, 0, 1, -1])
    report = simulate(binary, TINY, trace=True).report
    assert report.total_cycles == 116 + 46
    assert report.busy == {"DMA_LOAD": 16, "DMA_STORE": 0, "MXU": 46, "VPU": 20}
    assert report.busy_pct["MXU"] == pytest.approx(100 * 46 / 162)
    assert report.mxu_utilization == pytest.approx(16**3 / (162 * 256))
    assert report.hbm_bytes == 1024
    assert report.hbm_utilization == pytest.approx(1024 / (162 * 64))
    assert report.seconds == pytest.approx(162e-9)
    assert [(op.loc, op.total) for op in report.ops] == [(locs[0], 62), (locs[1], 20), ("<unknown>", 0)]
    text = report.format()
    assert "162 cycles" in text and "model.py:3 linear" in text
    assert json.loads(json.dumps(report.to_dict()))["busy_cycles"]["MXU"] == 46
    path = tmp_path / "trace.json"
    write_chrome_trace(report, path)
    events = [e for e in json.loads(path.read_text())["traceEvents"] if e["ph"] == "X"]
    assert {e["name"] for e in events} >= {"dma.load", "mxu.matmul", "vpu.fill", "signal s0", "wait s0"}
    mm = next(e for e in events if e["name"] == "mxu.matmul")
    assert (mm["ts"], mm["dur"], mm["args"]["loc"]) == (pytest.approx(0.116), pytest.approx(0.046), locs[0])


def test_trace_is_capped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(simulator_module, "TRACE_LIMIT", 3)
    report = simulate(make_binary([fill()] * 5), TINY, trace=True).report
    assert len(report.trace) == 3 and report.trace_truncated
    assert "truncated" in report.format()
    write_chrome_trace(report.trace, tmp_path / "t.json", clock_hz=2e9)
    last = json.loads((tmp_path / "t.json").read_text())["traceEvents"][-1]
    assert (last["ts"], last["dur"]) == (pytest.approx(0.02), pytest.approx(0.01))  # cycles 40..60 at 2 GHz
