"""The compile driver: imported graph -> pass pipeline -> binary.

The pipeline is a list of pass names from passes/registry.py; it is printable
(`tasic compile --print-pipeline`) and overridable (`--pipeline`).
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import PassPipeline
from xdsl.utils.exceptions import ArgSpecParseError

from tasic.backend.emit import emit_binary
from tasic.backend.target import Target
from tasic.backend.tbin import TBinary
from tasic.ir.dialects import tasic_context
from tasic.ir.isa import EntryOp, IsaOp, SymbolOp
from tasic.ir.weights import resolve_weights
from tasic.passes.registry import PASSES

RAISE_PASSES = ("raise-linear", "raise-layer-norm", "raise-rms-norm", "raise-gelu", "raise-attention", "raise-rope")
FLOAT_DTYPES = ("f32", "bf16")
QUANTIZE_MODES = {
    "fp8": "quantize-fp8",
    "fp8-row": 'quantize-fp8{granularity="row"}',
    "fp8-static": "quantize-fp8{placeholder_scales=true}",
}
"""--quantize choices: FP8 E4M3 linears with per-tensor (fp8) or per-row (fp8-row) activation scales computed at
run time, or static per-tensor scales (fp8-static: from --calibration; placeholders in a timing-only step)."""


class CompileError(Exception):
    """A model that cannot be compiled for a target (message is user-facing)."""


def default_pipeline(
    target: str,
    dtype: str,
    tp: int = 1,
    quantize: str | None = None,
    calibration: str | None = None,
    kv_dtype: str | None = None,
) -> str:
    """The standard pipeline for a target (shipped name or .toml path), as a pass-pipeline string.

    With `tp` > 1 the model is split over that many chips (tensor parallelism, pass shard-tp).
    `quantize` (a QUANTIZE_MODES key) adds quantize-fp8 after the raise and sharding passes; `calibration`, a JSON
    file of weight name -> max |input| (docs/quantization.md), makes its activation scales static.
    `kv_dtype` stores KV-cache state in another dtype than `dtype` (tile option kv_dtype).
    """
    sharding = [f"shard-tp{{chips={tp}}}"] if tp > 1 else []
    quantization = [quantize_pass(quantize, calibration)] if quantize else []
    lowering = [
        f'tile{{target="{target}" dtype={dtype}{f" kv_dtype={kv_dtype}" if kv_dtype not in (None, dtype) else ""}}}',
        f'double-buffer{{target="{target}"}}',
        f'plan-sram{{target="{target}"}}',
        f'prefetch-weights{{target="{target}"}}',
        "insert-sync",
        "lower-to-isa",
    ]
    return ",".join([*RAISE_PASSES, "fold-attention-scale", *sharding, "fuse-linears", *quantization, *lowering])


def quantize_pass(quantize: str, calibration: str | None = None) -> str:
    """The quantize-fp8 pass spec of a --quantize mode (and an optional calibration file)."""
    if quantize not in QUANTIZE_MODES:
        raise CompileError(f"unsupported quantization '{quantize}': choose one of {', '.join(QUANTIZE_MODES)}")
    if not calibration:
        return QUANTIZE_MODES[quantize]
    if quantize not in ("fp8", "fp8-static"):
        raise CompileError("a calibration file gives static per-tensor scales: use it with --quantize fp8-static")
    return f"quantize-fp8{{calibration={json.dumps(str(calibration))}}}"


def run_pipeline(module: ModuleOp, spec: str, progress: Callable[[str], None] | None = None) -> None:
    """Apply a pipeline in place, reporting each pass and its time."""
    try:
        pipeline = PassPipeline.parse_spec(PASSES, spec)
    except (Exception, ArgSpecParseError) as err:  # xDSL raises several types for a bad spec (one a BaseException)
        reason = [line.strip() for line in str(err).splitlines() if line.strip()][-1]
        raise CompileError(f"bad pipeline '{spec}': {reason}; known passes: {', '.join(PASSES)}") from None
    ctx = tasic_context()
    for index, compiler_pass in enumerate(pipeline.passes, 1):
        start = time.perf_counter()
        compiler_pass.apply(ctx, module)
        if progress:
            progress(f"  pass {index}/{len(pipeline.passes)} {compiler_pass.name}: {time.perf_counter() - start:.2f}s")


def compile_module(
    module: ModuleOp,
    weights: Mapping[str, np.ndarray] | None,
    target: Target,
    dtype: str,
    pipeline: str | None = None,
    metadata: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    tp: int = 1,
    quantize: str | None = None,
    calibration: str | None = None,
) -> TBinary:
    """Run the pipeline on a tfm module and encode the result for `target`.

    `weights` None makes a timing-only binary (no constants); `tp` > 1 splits the model over chips;
    `quantize` / `calibration` add quantize-fp8 to the default pipeline (see `default_pipeline`).
    """
    from tasic.passes.registry import pass_errors
    from tasic.passes.tiling.builder import DoesNotFitError

    if dtype not in FLOAT_DTYPES:
        raise CompileError(f"unsupported dtype '{dtype}': choose one of {', '.join(FLOAT_DTYPES)}")
    if quantize == "fp8-static" and not calibration and weights is not None and not pipeline:
        raise CompileError(
            "--quantize fp8-static needs --calibration FILE (static activation scales; make one with tasic calibrate)"
        )
    with _no_cycle_collection():
        try:
            if tp > target.chips:
                raise CompileError(f"--tp {tp} needs {tp} chips, target '{target.name}' has {target.chips}")
            run_pipeline(module, pipeline or default_pipeline(target.spec, dtype, tp, quantize, calibration), progress)
        except DoesNotFitError as err:
            raise CompileError(f"model does not fit target '{target.name}': {err}") from None
        except pass_errors() as err:
            raise CompileError(str(err)) from None
        stray = next((op for op in module.body.block.ops if not isinstance(op, SymbolOp | EntryOp | IsaOp)), None)
        if stray is not None:
            raise CompileError(
                f"the pipeline left '{stray.name}' ops, not instructions: a --pipeline must lower to the isa level"
                " (end with lower-to-isa; see tasic compile --print-pipeline)"
            )
        info = {"dtype": dtype, **({"quantize": quantize} if quantize and not pipeline else {}), **(metadata or {})}
        binary = emit_binary(module, resolve_weights(weights), target, info)
    _check_hbm(binary, target)
    return binary


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Python's cycle collector paused while the passes build IR: its full collections rescan every live
    op again and again as the module grows (40 % of a 10-layer seed stage's compile time; the garbage
    it would find meanwhile is a few MB). It runs again, as it was, afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _check_hbm(binary: TBinary, target: Target) -> None:
    need = binary.metadata["hbm_bytes"]
    if need > target.hbm.bytes:
        largest = max(binary.symbols, key=lambda s: s.nbytes)
        raise CompileError(
            f"model does not fit target '{target.name}': it needs {need} bytes of HBM, the target has "
            f"{target.hbm.bytes} (largest buffer: {largest.kind} '{largest.name}', {largest.nbytes} bytes)"
        )
