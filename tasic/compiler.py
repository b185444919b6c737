"""The compile driver: imported graph -> pass pipeline -> binary.

The pipeline is a list of pass names from passes/registry.py; it is printable
(`tasic compile --print-pipeline`) and overridable (`--pipeline`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import PassPipeline

from tasic.backend.emit import emit_binary
from tasic.backend.target import Target
from tasic.backend.tbin import TBinary
from tasic.ir.dialects import tasic_context
from tasic.passes.registry import PASSES

RAISE_PASSES = ("raise-linear", "raise-layer-norm", "raise-rms-norm", "raise-gelu", "raise-attention")
FLOAT_DTYPES = ("f32", "bf16")


class CompileError(Exception):
    """A model that cannot be compiled for a target (message is user-facing)."""


def default_pipeline(target: str, dtype: str) -> str:
    """The standard pipeline for a target (shipped name or .toml path), as a pass-pipeline string."""
    lowering = [
        f'tile{{target="{target}" dtype={dtype}}}',
        f'plan-sram{{target="{target}"}}',
        "insert-sync",
        "lower-to-isa",
    ]
    return ",".join([*RAISE_PASSES, *lowering])


def run_pipeline(module: ModuleOp, spec: str, progress: Callable[[str], None] | None = None) -> None:
    """Apply a pipeline in place, reporting each pass and its time."""
    try:
        pipeline = PassPipeline.parse_spec(PASSES, spec)
    except Exception as err:  # xDSL raises several types for a bad spec
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
    weights: Mapping[str, np.ndarray],
    target: Target,
    dtype: str,
    pipeline: str | None = None,
    metadata: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> TBinary:
    """Run the pipeline on a tfm module and encode the result for `target`."""
    from tasic.passes.tiling.builder import DoesNotFitError

    if dtype not in FLOAT_DTYPES:
        raise CompileError(f"unsupported dtype '{dtype}': choose one of {', '.join(FLOAT_DTYPES)}")
    try:
        run_pipeline(module, pipeline or default_pipeline(target.spec, dtype), progress)
    except DoesNotFitError as err:
        raise CompileError(f"model does not fit target '{target.name}': {err}") from None
    binary = emit_binary(module, weights, target, {"dtype": dtype, **(metadata or {})})
    _check_hbm(binary, target)
    return binary


def _check_hbm(binary: TBinary, target: Target) -> None:
    need = binary.metadata["hbm_bytes"]
    if need > target.hbm.bytes:
        largest = max(binary.symbols, key=lambda s: s.nbytes)
        raise CompileError(
            f"model does not fit target '{target.name}': it needs {need} bytes of HBM, the target has "
            f"{target.hbm.bytes} (largest buffer: {largest.kind} '{largest.name}', {largest.nbytes} bytes)"
        )
