"""Pipeline parallelism: a serving step split into stages of consecutive layers, each on its own chip.

Stages after the first take the previous stage's hidden states as input `hidden`; stages before the
last end by sending theirs over the links (`tfm.send` -> `tile.link_send` -> `link.send`). Run one
after another on the simulator, the stages give the logits and KV caches of the unsplit step, and a
timing-only step is as fast as its slowest stage.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from tasic.backend.target import load_target
from tasic.cli import main
from tasic.compiler import CompileError
from tasic.frontend.errors import FrontendError
from tasic.frontend.llama_step import BatchStep, PipelineStage, build_step
from tasic.isa_sim.simulator import simulate_timing
from tasic.roofline import roofline
from tasic.serving import check_fits, compile_step, distinct_stages, load_config, simulate_step

if TYPE_CHECKING:
    from conftest import TinyLlamaStep


@pytest.fixture(scope="module")
def unsplit(tiny_llama: TinyLlamaStep) -> dict[str, np.ndarray]:
    """The tiny step's logits and KV caches in one stage on one chip."""
    return tiny_llama.run(1)


def test_two_stages_equal_one(unsplit: dict[str, np.ndarray], tiny_llama: TinyLlamaStep) -> None:
    """Layer 0 on one chip, layer 1 and the head on the next: the same logits and caches, bit for bit."""
    split = tiny_llama.run_stages(2)
    assert set(split) == set(unsplit)
    for name, want in unsplit.items():
        np.testing.assert_array_equal(split[name], want, err_msg=name)


def test_stages_of_tensor_parallel_chips_equal_one(unsplit: dict[str, np.ndarray], tiny_llama: TinyLlamaStep) -> None:
    """Two stages of two tensor-parallel chips each: the unsplit step's logits and caches."""
    split = tiny_llama.run_stages(2, tp=2)
    for name, want in unsplit.items():
        np.testing.assert_allclose(split[name], want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_uneven_stages_equal_one(tiny_llama: TinyLlamaStep) -> None:
    """Three layers over two stages (two, then one) and over three stages give the same results."""
    three = type(tiny_llama)()
    three.config = dataclasses.replace(tiny_llama.config, layers=3)
    want = three.run(1)
    for pp in (2, 3):
        split = three.run_stages(pp)
        for name, value in want.items():
            np.testing.assert_array_equal(split[name], value, err_msg=f"pp={pp}: {name}")


def test_stage_layers_and_interfaces(tiny_llama: TinyLlamaStep) -> None:
    assert [PipelineStage(i, 3).layers(80) for i in range(3)] == [range(0, 27), range(27, 54), range(54, 80)]
    assert [PipelineStage(i, 8).layers(80) for i in (0, 7)] == [range(0, 10), range(70, 80)]
    first = build_step(tiny_llama.config, tiny_llama.step, stage=PipelineStage(0, 2))
    last = build_step(tiny_llama.config, tiny_llama.step, stage=PipelineStage(1, 2))
    assert first.input_names[0] == "ids" and first.output_names[0] == "hidden_out"
    assert last.input_names[0] == "hidden" and last.output_names[0] == "logits"
    assert all(".layers.0." in name for name in first.state_names)
    assert all(".layers.1." in name for name in last.state_names)
    assert "tfm.send" in str(first.module) and "tfm.send" not in str(last.module)
    with pytest.raises(FrontendError, match="has 2 layers, so choose between 1 and that many stages"):
        build_step(tiny_llama.config, tiny_llama.step, stage=PipelineStage(0, 3))


def test_distinct_stages_of_the_seed_model() -> None:
    """80 layers on 8 stages: the first, six identical middle stages and the last are three programs."""
    config = load_config("llama-3-70b")
    kinds = distinct_stages(config, 8)
    assert [(stage.index, covers) for stage, covers in kinds] == [(0, (0,)), (1, (1, 2, 3, 4, 5, 6)), (7, (7,))]
    assert [stage.index for stage, _ in distinct_stages(config, 1)] == [0]


def test_timing_only_pipeline_step(tiny_llama: TinyLlamaStep) -> None:
    """A stage sends its hidden states to the next over one peer's share of the links; the step is as
    slow as the slowest stage and the system's utilisation averages over every stage's chips."""
    target = load_target("tiny")
    config, step = tiny_llama.config, tiny_llama.step
    stages = compile_step(config, step, target, "bf16", 1, pp=2)
    assert [compiled.stage.index for compiled in stages] == [0, 1]
    result = simulate_step(stages, config, step, target, 1)
    first, last = (run.report for run in result.stages)
    assert first.link_bytes == step.tokens * config.hidden * 2  # bf16 hidden states, once
    assert last.link_bytes == 0
    send = next(op for op in first.ops if op.loc == "pipeline:send0")
    assert send.busy["LINK"] == first.busy["LINK"] > 0 and "LINK" not in last.busy
    assert result.step_s == max(first.seconds, last.seconds)
    assert result.tokens_per_s == pytest.approx(step.tokens / result.step_s)
    slots = first.mxu_mac_slots + last.mxu_mac_slots
    assert result.mxu_utilization == pytest.approx(
        slots / (2 * result.report.total_cycles * first.mxu_peak_macs_per_cycle)
    )
    bounds = [roofline(config, step, target, "bf16", 1, None, PipelineStage(i, 2)) for i in (0, 1)]
    assert result.roofline.bound_s == max(b.bound_s for b in bounds)
    whole = roofline(config, step, target, "bf16", 1)
    assert bounds[0].flops + bounds[1].flops == pytest.approx(whole.flops)
    assert bounds[0].link_bytes == step.tokens * config.hidden * 2 and bounds[1].link_bytes == 0
    assert simulate_timing(stages[0].binary, target).total_cycles == first.total_cycles


def test_pipeline_fit_checks() -> None:
    config, step, target = load_config("llama-3-70b"), BatchStep.seed(), load_target("sohu-like")
    with pytest.raises(CompileError, match="--tp 2 x --pp 8 needs 16 chips, target 'sohu-like' has 8"):
        check_fits(config, step, target, "bf16", 2, 8)
    with pytest.raises(CompileError, match="--pp must be between 1 and llama-3-70b's 80 layers, not 81"):
        check_fits(config, step, target, "bf16", 1, 81)
    with pytest.raises(CompileError, match="does not fit 1 chip"):
        check_fits(config, step, target, "bf16", 1, 1)  # 141 GB of bf16 weights alone
    check_fits(config, step, target, "bf16", 1, 2)  # 40 layers a chip fit


def test_cli_writes_one_binary_per_distinct_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "step.tbin"
    args = ["compile", "--config", "llama-3-70b", "--timing-only", "--target", "sohu-like", "--pp", "8"]
    assert main([*args, "--prefill", "16", "--decode", "7", "--decode-groups", "1", "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step.stage0.tbin", "step.stage1.tbin", "step.stage7.tbin"]
    assert "runs as stage(s) 1, 2, 3, 4, 5, 6" in captured.err
    assert "8 chip(s) of sohu-like (8 pipeline stages of 1), bf16" in captured.err  # a serving step's default
    assert "8 stages x 1 x sohu-like" in captured.out and "a token's latency through all 8 stages" in captured.out
    assert main(["compile", "--config", "llama-3-70b", "--timing-only", "--tp", "2", "--pp", "8"]) == 1
    assert "--tp 2 x --pp 8 needs 16 chips" in capsys.readouterr().err
    assert main(["compile", "model.py:build", "--pp", "2"]) == 1
    assert "--pp splits a --config serving step" in capsys.readouterr().err
