"""The seed benchmark: Llama-3-70B on 8 chips, one 2048-token prefill + 127 decode tokens per step.

Compiles the serving step from the shipped config (no weights, timing only) for sohu-like and
h100-like, simulates it, and prints tokens/s, step time, utilisation and the roofline beside the
published reference figures; then an ablation with each optimisation switched off in turn.

The 8 chips are 8 pipeline stages of 10 layers by default (--pp 8 --tp 1; Etched's "8-way model
parallel" may be tensor or pipeline parallel, DESIGN.md): every chip holds whole layers, so no
all-reduce crosses the links and the system finishes one step per slowest-stage time. A row with
the same chips as one tensor-parallel group (--tp 8) is printed beside it for sohu-like.

    python bench/seed.py [--pp 8] [--tp 1] [--quantize fp8-static] [--dtype bf16] [--no-ablation]
                         [--no-compare] [--layers N] [--json]

With --json the last line is one JSON object: per target, its tokens_per_s, mxu_util, roofline_ratio,
compile_s and sim_s. --layers N shortens the model (quick looks only; not the benchmark).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from tasic.backend.target import Target, load_target
from tasic.errors import USER_ERRORS
from tasic.frontend.llama_step import BatchStep, LlamaConfig
from tasic.roofline import roofline
from tasic.serving import (
    OPTIMISATIONS,
    StepResult,
    compile_step,
    default_kv_dtype,
    load_config,
    simulate_step,
    step_pipeline,
)

REFERENCES = (
    ("Etched Sohu claim, 8 chips, FP8", 500_000, "etched.com, June 2024"),
    ("8 x H100, TensorRT-LLM 0.10, FP8", 22_735, "NVIDIA: 1,337 output tok/s x 2176/128"),
)
TARGETS = ("sohu-like", "h100-like")


@dataclasses.dataclass
class Run:
    """One compiled and simulated step."""

    result: StepResult
    compile_s: float

    @property
    def row(self) -> dict[str, float | str]:
        r = self.result
        return {
            "target": r.target.name,
            "tp": r.tp,
            "pp": r.pp,
            "tokens_per_s": round(r.tokens_per_s, 1),
            "step_ms": round(r.step_s * 1e3, 4),
            "mxu_util": round(r.mxu_utilization, 4),
            "hbm_util": round(r.hbm_utilization, 4),
            "link_util": round(r.link_utilization, 4),
            "roofline_ms": round(r.roofline.bound_s * 1e3, 4),
            "roofline_limit": r.roofline.limit,
            "roofline_ratio": round(r.roofline_ratio, 3),
            "arrays_ms": round(r.roofline.arrays_s * 1e3, 4),
            "mxu_ceiling": round(r.roofline.mxu_ceiling, 4),
            "compile_s": round(self.compile_s, 2),
            "sim_s": round(r.sim_s, 2),
        }


def run(
    config: LlamaConfig,
    step: BatchStep,
    target: Target,
    args: argparse.Namespace,
    disabled: frozenset[str],
    tp: int | None = None,
    pp: int | None = None,
) -> Run:
    """Compile and simulate one configuration (`tp` and `pp` default to the command line's)."""
    tp, pp = tp or args.tp, pp or args.pp
    quantize = _quantize(args)
    pipeline = step_pipeline(target, args.dtype, tp, disabled, quantize, args.kv_dtype)
    start = time.perf_counter()
    binaries = compile_step(
        config, step, target, args.dtype, tp, pipeline, quantize=quantize, pp=pp, kv_dtype=args.kv_dtype
    )
    compile_s = time.perf_counter() - start
    return Run(simulate_step(binaries, config, step, target, tp), compile_s)


def _system(result: StepResult) -> str:
    """How the chips are used: "8 x sohu-like (TP 8)" or "8 x sohu-like (PP 8)"."""
    layout = " x ".join(f"{name} {degree}" for name, degree in (("PP", result.pp), ("TP", result.tp)) if degree > 1)
    return f"tasic {result.pp * result.tp} x {result.target.name} ({layout or 'one chip'})"


def _row(run_: Run) -> list[str]:
    row = run_.row
    return [
        _system(run_.result), f"{row['tokens_per_s']:,.0f}", f"{row['step_ms']:.2f}",
        f"{row['mxu_util']:.1%}", f"{row['hbm_util']:.1%}", f"{row['link_util']:.1%}",
        f"{row['roofline_ms']:.2f}", str(row["roofline_limit"]), f"{row['roofline_ratio']:.2f}x",
        f"{row['compile_s']:.1f}", f"{row['sim_s']:.1f}",
    ]  # fmt: skip


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(f"{c:>{w}}" for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def _same_peak_arrays(target: Target, side: int) -> Target:
    """The target with its matrix engine rebuilt as side x side arrays of the same total PE count."""
    count = target.mxu.rows * target.mxu.cols * target.mxu.count // (side * side)
    return dataclasses.replace(target, mxu=dataclasses.replace(target.mxu, rows=side, cols=side, count=count))


def _quantize(args: argparse.Namespace) -> str | None:
    return None if args.quantize == "none" else args.quantize


def _limits(run_: Run, claim_tokens_per_s: float, args: argparse.Namespace) -> list[str]:
    """Where the time goes; what the arrays' geometry allows and what a geometry fitting the heads would;
    what link bandwidth the claim and the compute bound would need."""
    r, roof = run_.result, run_.result.roofline
    clock = r.target.clock_hz
    lines = [f"  {r.target.name}: engine busy time per step: {r.busy_summary()}; roofline bound: {roof.limit}"]
    if r.pp > 1:
        stages = ", ".join(
            f"stage {'/'.join(map(str, s.stands_for))} {s.report.seconds * 1e3:.2f} ms" for s in r.stages
        )
        lines.append(
            f"  {r.target.name}: pipeline stages: {stages}; the slowest sets the step (a token's latency through"
            f" all {r.pp}: {r.pp * r.step_s * 1e3:.1f} ms)"
        )
    engine, cycles = max(r.report.busy.items(), key=lambda item: item[1])
    if cycles / clock > roof.bound_s:
        lines.append(
            f"  {r.target.name}: the busiest engine, {engine}, needs {cycles / clock * 1e3:.2f} ms per step, more than"
            f" the roofline bound ({roof.bound_s * 1e3:.2f} ms): even with perfect overlap the step cannot reach it"
        )
    mxu = r.target.mxu
    beyond = roof.arrays_s / roof.bound_s
    lines.append(
        f"  {r.target.name}: the step's products in whole {mxu.rows}x{mxu.cols} folds of {mxu.count} arrays need"
        f" {roof.arrays_s * 1e3:.2f} ms (step / that = {r.step_s / roof.arrays_s:.2f}x): on these arrays MXU"
        f" utilisation cannot pass {roof.mxu_ceiling:.1%}"
        + (f", nor the step come within {beyond:.2f}x of its bound" if beyond > 1 else "")
    )
    side = r.config.head_dim
    if (mxu.rows, mxu.cols) != (side, side):
        alternative = _same_peak_arrays(r.target, side)
        stage = max(r.stages, key=lambda run: run.roofline.bound_s).stage  # the stage r.roofline is of
        alt = roofline(r.config, r.step, alternative, args.dtype, r.tp, _quantize(args), stage, args.kv_dtype)
        lines.append(
            f"  {r.target.name}: with {alternative.mxu.count} arrays of {side}x{side} (the same peak) the floor is"
            f" {alt.arrays_s * 1e3:.2f} ms, MXU at most {alt.mxu_ceiling:.1%}"
        )
    if roof.link_bytes:
        claim_s = r.step.tokens / claim_tokens_per_s
        under_compute = roof.link_bytes / max(roof.compute_s, roof.memory_s)
        lines.append(
            f"  {r.target.name}: links carry {roof.link_bytes / 1e9:.2f} GB per chip per step; hiding them under"
            f" compute needs {under_compute / 1e12:.2f} TB/s per chip, the claim's {claim_s * 1e3:.2f} ms step needs"
            f" {roof.link_bytes / claim_s / 1e12:.2f} TB/s (target: {r.target.links.bandwidth / 1e12:.2f} TB/s)"
        )
    return lines


def main() -> None:
    """Run the benchmark and print its tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="bf16", help="activations and attention dtype (default bf16)")
    parser.add_argument(
        "--kv-dtype", help="KV-cache dtype (default f8e4m3 with FP8 linears, as the claim's FP8 serving, else --dtype)"
    )
    parser.add_argument(
        "--quantize",
        default="fp8-static",
        choices=["fp8-static", "fp8", "fp8-row", "none"],
        help="linears (default fp8-static: static per-tensor activation scales, as FP8 serving deploys)",
    )
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel chips per pipeline stage (default 1)")
    parser.add_argument("--pp", type=int, default=8, help="pipeline stages, each on --tp chips (default 8)")
    parser.add_argument("--layers", type=int, help="shorten the model to N layers (quick look, not the benchmark)")
    parser.add_argument("--no-ablation", action="store_true", help="skip the ablation table")
    parser.add_argument(
        "--no-compare", action="store_true", help="skip the sohu-like row with all chips tensor parallel"
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line of per-target results")
    args = parser.parse_args()
    args.kv_dtype = args.kv_dtype or default_kv_dtype(args.dtype, _quantize(args))

    config = load_config("llama-3-70b")
    if args.layers:
        config = dataclasses.replace(config, layers=args.layers)
    step = BatchStep.seed()
    print(
        f"seed step: {config.name} ({config.layers} layers), {step.prefill}-token prefill + {step.decode_tokens}"
        f" decode tokens at contexts {', '.join(str(c) for _, c in step.decode_groups)}; TP={args.tp}, PP={args.pp},"
        f" {args.dtype} activations, linears {args.quantize}, KV cache {args.kv_dtype}"
    )
    runs = {name: run(config, step, load_target(name), args, frozenset()) for name in TARGETS}

    header = ["system", "tok/s", "step ms", "MXU", "HBM", "link", "bound ms", "limit", "step/bound"]
    header += ["compile s", "sim s"]
    rows = [_row(run_) for run_ in runs.values()]
    compared = None
    if not args.no_compare and args.pp > 1:
        compared = run(config, step, load_target("sohu-like"), args, frozenset(), tp=args.tp * args.pp, pp=1)
        rows.append(_row(compared))
    rows += [[name, f"{value:,}", *["-"] * 9] for name, value, _ in REFERENCES]
    print(_table(rows, header))
    for name, _, source in REFERENCES:
        print(f"  reference {name}: {source}")
    for run_ in [*runs.values(), *([compared] if compared else [])]:
        print("\n".join(_limits(run_, REFERENCES[0][1], args)))

    if not args.no_ablation:
        base = runs["sohu-like"]
        ablation = [["all on", f"{base.row['tokens_per_s']:,.0f}", f"{base.row['step_ms']:.2f}", "1.00x", ""]]
        for name, what in OPTIMISATIONS.items():
            if name == "allreduce-overlap" and args.tp == 1:
                ablation.append([f"{name} off", "-", "-", "n/a", f"{what} (no all-reduce at --tp 1)"])
                continue
            off = run(config, step, load_target("sohu-like"), args, frozenset({name}))
            slower = off.result.step_s / base.result.step_s
            ablation.append([f"{name} off", f"{off.row['tokens_per_s']:,.0f}", f"{off.row['step_ms']:.2f}",
                             f"{slower:.2f}x", what])  # fmt: skip
        print("\nablation on sohu-like (each optimisation off in turn; slowdown vs all on):")
        print(_table(ablation, ["configuration", "tok/s", "step ms", "slowdown", "optimisation"]))
    if args.json:
        print(json.dumps({name: run_.row for name, run_ in runs.items()}))


if __name__ == "__main__":
    try:
        main()
    except USER_ERRORS as err:
        sys.exit(f"error: {err}")
