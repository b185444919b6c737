"""The one registry of passes, shared by tasic-opt and the compile driver."""

from __future__ import annotations

from collections.abc import Callable

from xdsl.passes import ModulePass


def _raise_linear() -> type[ModulePass]:
    from tasic.passes.raise_linear import RaiseLinearPass

    return RaiseLinearPass


def _raise_layer_norm() -> type[ModulePass]:
    from tasic.passes.raise_layer_norm import RaiseLayerNormPass

    return RaiseLayerNormPass


def _raise_rms_norm() -> type[ModulePass]:
    from tasic.passes.raise_rms_norm import RaiseRmsNormPass

    return RaiseRmsNormPass


def _raise_gelu() -> type[ModulePass]:
    from tasic.passes.raise_gelu import RaiseGeluPass

    return RaiseGeluPass


def _raise_attention() -> type[ModulePass]:
    from tasic.passes.raise_attention import RaiseAttentionPass

    return RaiseAttentionPass


def _raise_rope() -> type[ModulePass]:
    from tasic.passes.raise_rope import RaiseRopePass

    return RaiseRopePass


def _decode_buckets() -> type[ModulePass]:
    from tasic.passes.decode_buckets import DecodeBucketsPass

    return DecodeBucketsPass


def _shard_tp() -> type[ModulePass]:
    from tasic.passes.shard_tensor_parallel import ShardTensorParallelPass

    return ShardTensorParallelPass


def _fuse_linears() -> type[ModulePass]:
    from tasic.passes.fuse_linears import FuseLinearsPass

    return FuseLinearsPass


def _fold_attention_scale() -> type[ModulePass]:
    from tasic.passes.fold_attention_scale import FoldAttentionScalePass

    return FoldAttentionScalePass


def _quantize_fp8() -> type[ModulePass]:
    from tasic.passes.quantize_fp8 import QuantizeFp8Pass

    return QuantizeFp8Pass


def _tile() -> type[ModulePass]:
    from tasic.passes.tile import TilePass

    return TilePass


def _double_buffer() -> type[ModulePass]:
    from tasic.passes.double_buffer import DoubleBufferPass

    return DoubleBufferPass


def _plan_sram() -> type[ModulePass]:
    from tasic.passes.plan_sram import PlanSramPass

    return PlanSramPass


def _prefetch_weights() -> type[ModulePass]:
    from tasic.passes.prefetch_weights import PrefetchWeightsPass

    return PrefetchWeightsPass


def _insert_sync() -> type[ModulePass]:
    from tasic.passes.insert_sync import InsertSyncPass

    return InsertSyncPass


def _lower_to_isa() -> type[ModulePass]:
    from tasic.passes.lower_to_isa import LowerToIsaPass

    return LowerToIsaPass


PASSES: dict[str, Callable[[], type[ModulePass]]] = {
    "raise-linear": _raise_linear,
    "raise-layer-norm": _raise_layer_norm,
    "raise-rms-norm": _raise_rms_norm,
    "raise-gelu": _raise_gelu,
    "raise-attention": _raise_attention,
    "raise-rope": _raise_rope,
    "decode-buckets": _decode_buckets,
    "fuse-linears": _fuse_linears,
    "fold-attention-scale": _fold_attention_scale,
    "quantize-fp8": _quantize_fp8,
    "shard-tp": _shard_tp,
    "tile": _tile,
    "double-buffer": _double_buffer,
    "plan-sram": _plan_sram,
    "prefetch-weights": _prefetch_weights,
    "insert-sync": _insert_sync,
    "lower-to-isa": _lower_to_isa,
}


def pass_errors() -> tuple[type[Exception], ...]:
    """The exceptions passes raise for input they cannot handle (a model that does not fit, a split or
    quantisation that does not apply, IR not at the level a pass starts from): user errors, one line each."""
    from tasic.passes.lower_to_isa import LoweringError
    from tasic.passes.quantize_fp8 import QuantizeError
    from tasic.passes.shard_tensor_parallel import ShardingError
    from tasic.passes.tiling.builder import DoesNotFitError

    return (DoesNotFitError, ShardingError, QuantizeError, LoweringError)
