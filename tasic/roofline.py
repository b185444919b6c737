"""The analytical bounds of a serving step: what the step cannot beat on a target, per chip.

    bound = roofline(config, BatchStep.seed(), target, "bf16", tp=1, quantize="fp8-static")
    bound.bound_s      # max(compute_s, memory_s, link_s): useful FLOPs at peak, HBM bytes, link bytes
    bound.arrays_s     # the step's products in whole folds of the target's arrays (>= compute_s)
    bound.mxu_ceiling  # compute_s / arrays_s: the highest MXU utilisation this array geometry allows

The roofline counts useful work only (docs/seed.md): linear layers split over the chips, the lm_head
on the rows that need logits, causal prefill attention once, decode attention over each sequence's
context, and in the model's last layer only the keys and values of every row and the rest for the rows
that need logits (frontend/llama_step.py); every weight read once, the KV cache read and written; the
all-reduces' and the pipeline's link bytes. The array floor charges each product whole folds (an
output block of rows x cols of one array, docs/isa.md), with perfect packing over the arrays and no
fill or drain: a 2175-row activation
takes 9 row folds of 256, an 8-row decode attention product a whole fold, a head_dim-128 output half
of a 256-column array. No schedule on the target beats it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tasic.backend.isa_spec import DTYPE_BY_NAME, DTYPE_BYTES
from tasic.backend.target import MatrixEngine, Target
from tasic.frontend.llama_step import BatchStep, LlamaConfig, PipelineStage


@dataclass(frozen=True)
class Roofline:
    """Per-chip work of one step and the time each resource needs for it at peak."""

    flops: float
    hbm_bytes: float
    link_bytes: float
    compute_s: float
    memory_s: float
    link_s: float
    arrays_s: float

    @property
    def bound_s(self) -> float:
        """The step cannot be faster than this."""
        return max(self.compute_s, self.memory_s, self.link_s)

    @property
    def limit(self) -> str:
        """Which resource sets the bound."""
        times = {"compute": self.compute_s, "memory": self.memory_s, "link": self.link_s}
        return max(times, key=times.__getitem__)

    @property
    def mxu_ceiling(self) -> float:
        """The highest MXU utilisation the arrays' geometry allows on this step (useful over folded work)."""
        return self.compute_s / self.arrays_s if self.arrays_s else 1.0


def bytes_of(dtype: str) -> int:
    """Bytes of one element of a dtype named as in the ISA ("bf16", "f8e4m3", ...)."""
    return DTYPE_BYTES[DTYPE_BY_NAME[dtype]]


def fold_cycles(mxu: MatrixEngine, rows: int, cols: int, depth: float, rate: float) -> float:
    """Array cycles of C[rows, cols] over `depth` in whole folds (either orientation, the cheaper)."""
    folds = min(
        math.ceil(rows / mxu.rows) * math.ceil(cols / mxu.cols),
        math.ceil(cols / mxu.rows) * math.ceil(rows / mxu.cols),
    )
    return folds * depth / rate


def prefill_attention_cycles(
    mxu: MatrixEngine, queries: int, group: int, head_dim: int, rate: float, last: int | None = None
) -> float:
    """Folded cycles of one KV head's causal prefill attention (S = Q K^T, then P V) of the `last` of
    the prompt's `queries` (default all): the `group` query heads sharing the KV head stacked as rows in
    order of their visible keys, so each row fold sees the keys of its last query."""
    first = queries - (queries if last is None else last)
    stacked = (queries - first) * group
    cycles = 0.0
    for start in range(0, stacked, mxu.rows):
        visible = first + min((start + mxu.rows - 1) // group, queries - first - 1) + 1
        rows = min(mxu.rows, stacked - start)
        cycles += fold_cycles(mxu, rows, visible, head_dim, rate) + fold_cycles(mxu, rows, head_dim, visible, rate)
    return cycles


def _arrays_s(
    c: LlamaConfig, step: BatchStep, target: Target, layers: int, last: bool, tp: int, rates: tuple[float, float]
) -> float:
    """The step's products in whole folds of the target's arrays, spread perfectly over all of them."""
    mxu, (linear_rate, attention_rate) = target.mxu, rates
    hd, rows = c.head_dim, step.logit_rows
    group, kv_heads = c.heads // c.kv_heads, max(1, c.kv_heads // tp)

    def layer(queries: int, prompt_queries: int) -> float:
        """A layer whose outputs `queries` rows need (`prompt_queries` of them the prompt's last)."""
        linears = (  # (rows, N, K): q/k/v and gate/up fused as the compiler fuses them
            (step.tokens, 2 * c.kv_heads * hd // tp, c.hidden),
            (queries, c.heads * hd // tp, c.hidden),
            (queries, c.hidden, c.heads * hd // tp),
            (queries, 2 * c.ffn // tp, c.hidden),
            (queries, c.hidden, c.ffn // tp),
        )
        if queries == step.tokens:  # q, k and v in one product
            linears = ((step.tokens, (c.heads + 2 * c.kv_heads) * hd // tp, c.hidden), *linears[2:])
        cycles = sum(fold_cycles(mxu, m, n, k, linear_rate) for m, n, k in linears)
        cycles += kv_heads * prefill_attention_cycles(mxu, step.prefill, group, hd, attention_rate, prompt_queries)
        for count, context in step.decode_groups:
            per_head = fold_cycles(mxu, group, context, hd, attention_rate) + fold_cycles(
                mxu, group, hd, context, attention_rate
            )
            cycles += count * kv_heads * per_head
        return cycles

    full = layer(step.tokens, step.prefill)
    total = layers * full
    if last:
        total += layer(rows, min(1, step.prefill)) - full  # the model's last layer: the logits' rows only
        total += fold_cycles(mxu, rows, c.vocab, c.hidden, linear_rate)
    return total / mxu.count / target.clock_hz


def roofline(
    config: LlamaConfig,
    step: BatchStep,
    target: Target,
    dtype: str,
    tp: int,
    quantize: str | None = None,
    stage: PipelineStage | None = None,
    kv_dtype: str | None = None,
) -> Roofline:
    """The analytical bound of one step on `tp` chips of `target` (see the module docstring), or of one
    pipeline stage's chips: its layers, the embedding on the first, the lm_head on the last and the
    hidden states it sends to the next stage over one peer's share of the links.

    With `quantize` (FP8 linears) the linear layers' weights are 1 byte and their products run at the
    MXU's f8e4m3 rate; attention, activations and all-reduces stay in `dtype`, the KV cache in
    `kv_dtype` (default `dtype`).
    """
    c, stage = config, stage or PipelineStage()
    layers = len(stage.layers(c.layers))
    hd, eb = c.head_dim, bytes_of(dtype)
    linear_eb = 1 if quantize else eb
    per_layer = c.linear_weights_per_layer
    head = c.vocab * c.hidden if stage.last else 0  # the lm_head is a linear too
    linear_macs = step.tokens * layers * per_layer / tp + step.logit_rows * head
    prompt_pairs = step.prefill * (step.prefill + 1) // 2
    decoded = sum(count * context for count, context in step.decode_groups)
    attention_macs = layers * (c.heads // tp) * (prompt_pairs + decoded) * hd * 2
    if stage.last:  # the model's last layer: keys and values of every row, the rest for the logits' rows
        kv_weights = 2 * c.hidden * c.kv_heads * hd
        linear_macs -= (step.tokens - step.logit_rows) * (per_layer - kv_weights) / tp
        attention_macs -= (c.heads // tp) * (prompt_pairs - min(1, step.prefill) * step.prefill) * hd * 2
    flops = 2 * (linear_macs + attention_macs)
    linear_weights = layers * per_layer / tp + head
    embedding = c.step_rows_of_embedding(step.tokens) if stage.first else 0
    other_weights = embedding + (2 * layers + (1 if stage.last else 0)) * c.hidden
    kv_slots = step.tokens + sum(count * context for count, context in step.decode_groups)
    kv_bytes = layers * (c.kv_heads // tp) * hd * 2 * kv_slots * bytes_of(kv_dtype or dtype)
    hbm = linear_weights * linear_eb + other_weights * eb + kv_bytes
    all_reduced = 2 * layers * step.tokens * c.hidden * eb * 2 * (tp - 1) / tp
    sent = 0 if stage.last else step.tokens * c.hidden * eb  # each chip sends the hidden states to its peer
    macs_per_s = target.mxu.rows * target.mxu.cols * target.mxu.count * target.clock_hz
    linear_rate = target.mxu.rate["f8e4m3" if quantize else dtype]
    attention_rate = target.mxu.rate[dtype]
    compute_s = linear_macs / (macs_per_s * linear_rate) + attention_macs / (macs_per_s * attention_rate)
    peer_bandwidth = target.peer_link_bytes_per_cycle * target.clock_hz
    link_s = all_reduced / target.links.bandwidth + sent / peer_bandwidth
    arrays_s = _arrays_s(c, step, target, layers, stage.last, tp, (linear_rate, attention_rate))
    return Roofline(flops, hbm, all_reduced + sent, compute_s, hbm / target.hbm.bandwidth, link_s, arrays_s)
