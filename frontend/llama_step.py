"""A Llama-family serving step built straight from a config.json, without torch and without weights.

The seed benchmark's batch step (docs/seed.md): one prompt of `prefill` tokens plus one new token
for each of the decoding sequences, grouped by context length. All tokens share the linear layers
(rows of one [T, hidden] activation); attention is separate per prompt and per decode group:

    ids [T]  rope_cos / rope_sin [T, head_dim]            T = prefill + decode tokens
    prefill_slots [P]            cache slots of the prompt's keys and values (0..P-1)
    decode{g}_slot [1]           the slot of group g's new keys and values (its context - 1)
    state: layers.{i}.prefill_k/v [1, kv_heads, context, head_dim],
           layers.{i}.decode{g}_k/v [n_g, kv_heads, context_g, head_dim]
    -> logits [1 + decode tokens, vocab]   (the prompt's last token and every decode token)

    %q = tfm.linear %x, %wq {loc = "model.layers.0.self_attn.q_proj:linear"} : ...

A pipeline stage (`stage=PipelineStage(i, n)`) holds its share of the layers: stages after the first
take `hidden` [T, hidden] instead of `ids`, and stages before the last end in `tfm.send` of their
hidden states (output `hidden_out`, the next stage's `hidden`) instead of the logits.

The model's last layer computes its outputs only for the rows that produce logits (the prompt's last
token and the decode tokens): every row's keys and values still go to the caches, but its queries,
attention, o_proj and MLP take those rows alone (the other 2047 rows of the seed step's last layer
would only be thrown away before the lm_head).

`weights="none"` gives a timing-only graph (tfm.weight ops with shapes, no data); "random" gives
seeded random weights so that small configs can be checked numerically.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, ModuleOp, StringAttr, f32, i64
from xdsl.ir import Block, Region, SSAValue

from tasic.frontend.errors import FrontendError
from tasic.frontend.tfm_emitter import TfmEmitter, tensor_type
from tasic.ir import tfm
from tasic.ir.weights import WeightStore

LLAMA_SHAPED = ("llama", "mistral", "qwen2")
"""model_type values whose decoder is the Llama step's (RMSNorm, RoPE, GQA attention, SwiGLU), up to
the features `unmodelled_features` lists."""

_REQUIRED = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "vocab_size",
)


def unmodelled_features(config: Mapping[str, Any]) -> tuple[str, ...]:
    """Features of a Hugging Face config that the Llama step leaves out (its timing is then the Llama
    decoder's of the same sizes), e.g. ("q/k/v biases", "sliding-window attention (4096 tokens)")."""
    found = []
    model_type = config.get("model_type")
    if model_type is not None and model_type not in LLAMA_SHAPED:
        found.append(f"the rest of model_type '{model_type}'")
    act = config.get("hidden_act") or config.get("hidden_activation") or "silu"
    if act != "silu":
        found.append(f"hidden_act '{act}' (timed as SwiGLU)")
    if config.get("attention_bias") or model_type == "qwen2":
        found.append("q/k/v biases")
    if config.get("mlp_bias"):
        found.append("MLP biases")
    window = config.get("sliding_window")
    if window and config.get("use_sliding_window", True) and window < config.get("max_position_embeddings", 8192):
        found.append(f"sliding-window attention ({window} tokens)")
    if config.get("attn_logit_softcapping") or config.get("final_logit_softcapping"):
        found.append("logit soft-capping")
    return tuple(found)


@dataclass(frozen=True)
class LlamaConfig:
    """The figures of a Llama-family decoder that the step graph needs."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    rms_eps: float
    rope_theta: float
    max_context: int
    unmodelled: tuple[str, ...] = ()
    """What the config describes that the Llama step does not model (`unmodelled_features`)."""

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], name: str = "model") -> LlamaConfig:
        """Read a Hugging Face style config; FrontendError names a missing or bad key."""
        missing = [key for key in _REQUIRED if key not in config]
        if missing:
            raise FrontendError(f"config '{name}' lacks {', '.join(missing)} (a Llama-style config.json is needed)")
        try:
            hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
            rope = config.get("rope_parameters") or {}
            parsed = cls(
                name=name,
                hidden=hidden,
                layers=int(config["num_hidden_layers"]),
                heads=heads,
                kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                ffn=int(config["intermediate_size"]),
                vocab=int(config["vocab_size"]),
                rms_eps=float(config.get("rms_norm_eps", 1e-5)),
                rope_theta=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
                max_context=int(config.get("max_position_embeddings", 8192)),
                unmodelled=unmodelled_features(config),
            )
        except (TypeError, ValueError) as err:
            raise FrontendError(f"config '{name}': {err}") from None
        for field_name in ("hidden", "layers", "heads", "kv_heads", "head_dim", "ffn", "vocab"):
            if getattr(parsed, field_name) <= 0:
                raise FrontendError(f"config '{name}': {field_name} must be positive")
        if not config.get("head_dim") and hidden % heads:
            raise FrontendError(
                f"config '{name}': hidden_size {hidden} does not split into {heads} attention heads"
                " (give head_dim if the heads are not hidden_size / num_attention_heads wide)"
            )
        if heads % parsed.kv_heads:
            raise FrontendError(
                f"config '{name}': {heads} attention heads do not group over {parsed.kv_heads} kv heads"
            )
        return parsed

    @classmethod
    def load(cls, path: str | Path) -> LlamaConfig:
        """Read a config.json file; FrontendError when it is missing or not JSON."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FrontendError(f"config file '{path}' does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise FrontendError(f"config file '{path}' is not JSON: {err}") from None
        if not isinstance(data, dict):
            raise FrontendError(f"config file '{path}' is not a JSON object")
        return cls.from_dict(data, data.get("_name_or_path") or path.stem)

    @property
    def linear_weights_per_layer(self) -> int:
        """Weights of one layer's projections: q, k, v, o, gate, up and down."""
        return self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads) + 3 * self.hidden * self.ffn

    def weight_count(self) -> int:
        """Parameters: embeddings, lm_head (untied) and the layers' projections and norms."""
        layer = self.linear_weights_per_layer + 2 * self.hidden
        return 2 * self.vocab * self.hidden + self.layers * layer + self.hidden

    def step_rows_of_embedding(self, tokens: int) -> int:
        """Embedding-table values a step reads: one row per token (at most the whole table)."""
        return min(tokens, self.vocab) * self.hidden

    def kv_bytes_per_token(self, element_bytes: int) -> int:
        """KV-cache bytes one token takes over all layers."""
        return self.layers * self.kv_heads * self.head_dim * 2 * element_bytes


@dataclass(frozen=True)
class BatchStep:
    """One continuous-batching step: a prompt of `prefill` tokens and decode groups (count, context)."""

    prefill: int
    decode_groups: tuple[tuple[int, int], ...]

    @property
    def decode_tokens(self) -> int:
        """New tokens of the decoding sequences, one each."""
        return sum(count for count, _ in self.decode_groups)

    @property
    def logit_rows(self) -> int:
        """Rows that produce a token, the step's last ones: the prompt's last token and the decode tokens."""
        return self.decode_tokens + (1 if self.prefill else 0)

    @property
    def tokens(self) -> int:
        """Rows through the linear layers: prompt tokens plus decode tokens."""
        return self.prefill + self.decode_tokens

    @property
    def cache_len(self) -> int:
        """KV slots of the longest sequence."""
        return max([self.prefill, *(context for _, context in self.decode_groups)])

    @classmethod
    def seed(cls, prefill: int = 2048, decode: int = 127, output: int = 128, groups: int = 4) -> BatchStep:
        """Etched's step: a `prefill`-token prompt and `decode` sequences spread over their `output` tokens.

        Sequence j (1..decode) is at context prefill + j * output // (decode + 1); sequences are put in
        `groups` groups of consecutive contexts, each costed at its longest context.
        """
        if prefill < 1 or decode < 0 or groups < 1 or output < 1:
            raise FrontendError("prefill, output and groups must be positive and decode non-negative")
        contexts = [prefill + max(1, j * output // (decode + 1)) for j in range(1, decode + 1)]
        size = -(-decode // groups) if decode else 0
        chunks = [contexts[i : i + size] for i in range(0, decode, size)] if decode else []
        return cls(prefill, tuple((len(chunk), max(chunk)) for chunk in chunks))


@dataclass(frozen=True)
class PipelineStage:
    """Stage `index` of `count` (pipeline parallelism): a contiguous run of layers on its own chips.

    The first stage embeds the tokens, the last ends with the final norm and the lm_head; every other
    stage takes the previous stage's hidden states as its input `hidden` and sends its own on.
    """

    index: int = 0
    count: int = 1

    @property
    def first(self) -> bool:
        """Whether this stage embeds the tokens."""
        return self.index == 0

    @property
    def last(self) -> bool:
        """Whether this stage computes the logits."""
        return self.index == self.count - 1

    def layers(self, total: int) -> range:
        """This stage's layers of `total`: an even split, the first stages taking one more when uneven."""
        base, extra = divmod(total, self.count)
        start = self.index * base + min(self.index, extra)
        return range(start, start + base + (1 if self.index < extra else 0))


class _StepEmitter(TfmEmitter):
    def __init__(self, block: Block) -> None:
        self.block = block
        self.loc = ""

    def location(self) -> str:
        return self.loc

    def unsupported(self, reason: str | None = None) -> NoReturn:
        raise FrontendError(reason or "unsupported")


class _StepBuilder:
    def __init__(
        self,
        config: LlamaConfig,
        step: BatchStep,
        weights: Literal["none", "random"],
        seed: int,
        stage: PipelineStage,
    ) -> None:
        self.config, self.step, self.stage = config, step, stage
        self.block = Block()
        self.emitter = _StepEmitter(self.block)
        self.weights = WeightStore()
        self.seed = seed if weights == "random" else None
        self.input_names: list[str] = []
        self.state_names: list[str] = []
        self.state_values: list[SSAValue] = []
        self.output_names: list[str] = []

    def argument(self, name: str, dims: Sequence[int], element: Any = f32) -> SSAValue:
        value = self.block.insert_arg(tensor_type(dims, element), len(self.block.args))
        value.name_hint = name.replace(".", "_")
        return value

    def weight(self, name: str, dims: Sequence[int], kind: Literal["matrix", "norm"] = "matrix") -> SSAValue:
        if self.seed is not None:  # seeded by name: every pipeline stage draws the same values
            random = np.random.default_rng([self.seed, zlib.crc32(name.encode())])
            if kind == "norm":
                array = 1 + 0.1 * random.standard_normal(dims)
            else:
                array = random.standard_normal(dims) / math.sqrt(dims[-1])
            self.weights.add(name, array.astype(np.float32))
        self.emitter.loc = name.removesuffix(".weight")
        return self.emitter.emit(tfm.WeightOp(name, tensor_type(dims, f32)))

    def linear(self, x: SSAValue, name: str, out: int) -> SSAValue:
        w = self.weight(f"{name}.weight", (out, tfm.shape_of(x)[-1]))
        self.emitter.loc = f"{name}:linear"
        rows = tfm.shape_of(x)[:-1]
        return self.emitter.emit(tfm.LinearOp(x, w, None, tensor_type([*rows, out], f32)))

    def rms_norm(self, x: SSAValue, name: str) -> SSAValue:
        w = self.weight(f"{name}.weight", (self.config.hidden,), "norm")
        self.emitter.loc = f"{name}:rms_norm"
        return self.emitter.emit(tfm.RmsNormOp(x, w, self.config.rms_eps))

    def rope(self, x: SSAValue, cos: SSAValue, sin: SSAValue) -> SSAValue:
        """x [T, heads, head_dim] rotated: x * cos + rotate_half(x) * sin (cos, sin: [T, 1, head_dim])."""
        e = self.emitter
        half = self.config.head_dim // 2
        rotated = e.emit(
            tfm.ConcatOp([e.unary("neg", e.slice(x, 2, half, 2 * half)), e.slice(x, 2, 0, half)], 2, x.type)
        )
        return e.binary("add", e.binary("mul", x, cos), e.binary("mul", rotated, sin))

    def build(self) -> ModuleOp:
        c, s, e = self.config, self.step, self.emitter
        tokens = s.tokens
        if self.stage.first:
            first, entry = "ids", self.argument("ids", (tokens,), i64)
        else:
            first, entry = "hidden", self.argument("hidden", (tokens, c.hidden))
        cos = self.argument("rope_cos", (tokens, c.head_dim))
        sin = self.argument("rope_sin", (tokens, c.head_dim))
        prefill_slots = self.argument("prefill_slots", (s.prefill,), i64)
        decode_slots = [self.argument(f"decode{g}_slot", (1,), i64) for g in range(len(s.decode_groups))]
        self.input_names = [first, "rope_cos", "rope_sin", "prefill_slots"]
        self.input_names += [f"decode{g}_slot" for g in range(len(s.decode_groups))]
        e.loc = "rope"
        cos3 = e.reshape(cos, (tokens, 1, c.head_dim))
        sin3 = e.reshape(sin, (tokens, 1, c.head_dim))
        x = entry
        if self.stage.first:
            table = self.weight("model.embed_tokens.weight", (c.vocab, c.hidden))
            e.loc = "model.embed_tokens:embedding"
            x = e.emit(tfm.EmbeddingOp(table, entry, tensor_type((tokens, c.hidden), f32)))
        layers = self.stage.layers(c.layers)
        for layer in layers:
            last = self.stage.last and layer == layers[-1]
            x = self.layer(layer, x, cos3, sin3, prefill_slots, decode_slots, s.logit_rows if last else 0)
        if self.stage.last:
            result, result_name = self.head(x), "logits"
        else:
            e.loc = f"pipeline:send{self.stage.index}"
            result, result_name = e.emit(tfm.SendOp(x)), "hidden_out"
        e.loc = ""
        self.block.add_op(func.ReturnOp(result, *self.state_values))
        inputs = [arg.type for arg in self.block.args]
        function = func.FuncOp(
            "main", (inputs, [result.type, *(v.type for v in self.state_values)]), Region(self.block)
        )
        self.output_names = [result_name, *self.state_names]
        all_inputs = [*self.input_names, *self.state_names]
        for attribute, names in (
            ("tfm.input_names", all_inputs),
            ("tfm.output_names", self.output_names),
            ("tfm.state_names", self.state_names),
        ):
            function.attributes[attribute] = ArrayAttr([StringAttr(n) for n in names])
        module = ModuleOp([function])
        module.verify()
        return module

    def head(self, x: SSAValue) -> SSAValue:
        """The final norm and the lm_head over the rows that produce a token (the last layer's only rows)."""
        return self.linear(self.rms_norm(x, "model.norm"), "lm_head", self.config.vocab)

    def cache(self, name: str, dims: Sequence[int]) -> SSAValue:
        self.state_names.append(name)
        return self.argument(name, dims)

    def layer(
        self,
        layer: int,
        x: SSAValue,
        cos: SSAValue,
        sin: SSAValue,
        prefill_slots: SSAValue,
        decode_slots: list[SSAValue],
        keep: int = 0,
    ) -> SSAValue:
        """One decoder layer; with `keep`, its outputs for the last `keep` rows only (their queries alone
        attend), though every row's keys and values are written to the caches."""
        c, s, e = self.config, self.step, self.emitter
        prefix = f"model.layers.{layer}"
        tokens, hd = s.tokens, c.head_dim
        q0 = tokens - keep if keep else 0  # the first row whose output is computed
        h = self.rms_norm(x, f"{prefix}.input_layernorm")
        q = self.linear(h, f"{prefix}.self_attn.q_proj", c.heads * hd)  # all rows: one linear with k and v
        k = self.linear(h, f"{prefix}.self_attn.k_proj", c.kv_heads * hd)
        v = self.linear(h, f"{prefix}.self_attn.v_proj", c.kv_heads * hd)
        e.loc = f"{prefix}.self_attn:rope"
        q_cos, q_sin = e.slice(cos, 0, q0, tokens), e.slice(sin, 0, q0, tokens)
        q = self.rope(e.reshape(e.slice(q, 0, q0, tokens), (tokens - q0, c.heads, hd)), q_cos, q_sin)
        k = self.rope(e.reshape(k, (tokens, c.kv_heads, hd)), cos, sin)
        v = e.reshape(v, (tokens, c.kv_heads, hd))
        outputs = []
        if s.prefill:
            outputs.append(self.prefill_attention(prefix, q, k, v, prefill_slots, q0))
        start = s.prefill
        for group, ((count, context), slot) in enumerate(zip(s.decode_groups, decode_slots, strict=True)):
            rows = (start, start + count)
            outputs.append(self.decode_attention(prefix, group, q, k, v, rows, context, slot, q0))
            start += count
        e.loc = f"{prefix}.self_attn:concat"
        attended = (
            outputs[0]
            if len(outputs) == 1
            else e.emit(tfm.ConcatOp(outputs, 0, tensor_type((tokens - q0, c.heads * hd), f32)))
        )
        e.loc = f"{prefix}:rows"
        x = e.slice(x, 0, q0, tokens)
        x = self.residual(x, self.linear(attended, f"{prefix}.self_attn.o_proj", c.hidden), prefix)
        h = self.rms_norm(x, f"{prefix}.post_attention_layernorm")
        gate = self.linear(h, f"{prefix}.mlp.gate_proj", c.ffn)
        up = self.linear(h, f"{prefix}.mlp.up_proj", c.ffn)
        e.loc = f"{prefix}.mlp:silu"
        hidden = e.binary("mul", e.unary("silu", gate), up)
        return self.residual(x, self.linear(hidden, f"{prefix}.mlp.down_proj", c.hidden), prefix)

    def residual(self, x: SSAValue, y: SSAValue, prefix: str) -> SSAValue:
        self.emitter.loc = f"{prefix}:residual"
        return self.emitter.binary("add", x, y)

    def prefill_attention(
        self, prefix: str, q: SSAValue, k: SSAValue, v: SSAValue, slots: SSAValue, q0: int = 0
    ) -> SSAValue:
        """The prompt attends causally to itself; its keys and values are written to its cache. `q` holds
        the queries of rows q0.. only: those of the prompt's rows from q0 on attend."""
        c, s, e = self.config, self.step, self.emitter
        p, hd = s.prefill, c.head_dim
        e.loc = f"{prefix}.self_attn:prefill"
        queries = p - q0
        heads_first = [e.transpose(e.slice(t, 0, 0, n), (1, 0, 2)) for t, n in ((q, queries), (k, p), (v, p))]
        qp, kp, vp = (e.reshape(t, (1, *tfm.shape_of(t))) for t in heads_first)
        for name, new in (("k", kp), ("v", vp)):
            cache = self.cache(f"{prefix}.prefill_{name}", (1, c.kv_heads, s.cache_len, hd))
            self.state_values.append(e.emit(tfm.IndexCopyOp(cache, slots, new, 2)))
        result = tensor_type((1, c.heads, queries, hd), f32)
        out = e.emit(tfm.AttentionOp(qp, kp, vp, None, True, 1 / math.sqrt(hd), result))
        return e.reshape(e.transpose(e.reshape(out, (c.heads, queries, hd)), (1, 0, 2)), (queries, c.heads * hd))

    def decode_attention(
        self,
        prefix: str,
        group: int,
        q: SSAValue,
        k: SSAValue,
        v: SSAValue,
        rows: tuple[int, int],
        context: int,
        slot: SSAValue,
        q0: int = 0,
    ) -> SSAValue:
        """Each sequence's new token attends to its `context` cached slots (the new one written first);
        `q` holds the queries of rows q0.. only."""
        c, e = self.config, self.emitter
        n, hd = rows[1] - rows[0], c.head_dim
        e.loc = f"{prefix}.self_attn:decode{group}"
        starts = ((q, rows[0] - q0), (k, rows[0]), (v, rows[0]))
        qd, kd, vd = (e.reshape(e.slice(t, 0, r, r + n), (n, tfm.shape_of(t)[1], 1, hd)) for t, r in starts)
        caches = []
        for name, new in (("k", kd), ("v", vd)):
            cache = self.cache(f"{prefix}.decode{group}_{name}", (n, c.kv_heads, context, hd))
            updated = e.emit(tfm.IndexCopyOp(cache, slot, new, 2))
            self.state_values.append(updated)
            caches.append(updated)
        result = tensor_type((n, c.heads, 1, hd), f32)
        out = e.emit(tfm.AttentionOp(qd, caches[0], caches[1], None, False, 1 / math.sqrt(hd), result))
        return e.reshape(out, (n, c.heads * hd))


@dataclass
class StepGraph:
    """The step's tfm module, its weights (empty for timing-only) and its entry's names."""

    module: ModuleOp
    weights: WeightStore
    input_names: list[str]
    output_names: list[str]
    state_names: list[str]


def build_step(
    config: LlamaConfig,
    step: BatchStep,
    weights: Literal["none", "random"] = "none",
    seed: int = 0,
    stage: PipelineStage | None = None,
) -> StepGraph:
    """The tfm graph of one serving step of `config` (see the module docstring), or of one pipeline stage."""
    if step.cache_len > config.max_context:
        raise FrontendError(
            f"a context of {step.cache_len} tokens exceeds the model's {config.max_context} (max_position_embeddings)"
        )
    stage = stage or PipelineStage()
    if not 0 <= stage.index < stage.count or stage.count > config.layers:
        raise FrontendError(
            f"pipeline stage {stage.index} of {stage.count}: {config.name} has {config.layers} layers,"
            " so choose between 1 and that many stages"
        )
    builder = _StepBuilder(config, step, weights, seed, stage)
    module = builder.build()
    inputs = [*builder.input_names, *builder.state_names]
    return StepGraph(module, builder.weights, inputs, builder.output_names, builder.state_names)


def step_inputs(config: LlamaConfig, step: BatchStep, seed: int = 0) -> dict[str, np.ndarray]:
    """Run-time inputs of a step: random token ids, rope tables at each token's position, cache slots.

    Prompt tokens sit at positions 0..P-1; group g's tokens at its context - 1. Caches are not included.
    """
    rng = np.random.default_rng(seed)
    positions = [*range(step.prefill)]
    for count, context in step.decode_groups:
        positions += [context - 1] * count
    inverse = 1.0 / config.rope_theta ** (np.arange(0, config.head_dim, 2) / config.head_dim)
    angles = np.outer(np.array(positions, np.float64), inverse)
    angles = np.concatenate([angles, angles], axis=1)
    inputs = {
        "ids": rng.integers(0, config.vocab, step.tokens, dtype=np.int64),
        "rope_cos": np.cos(angles).astype(np.float32),
        "rope_sin": np.sin(angles).astype(np.float32),
        "prefill_slots": np.arange(step.prefill, dtype=np.int64),
    }
    for g, (_, context) in enumerate(step.decode_groups):
        inputs[f"decode{g}_slot"] = np.array([context - 1], np.int64)
    return inputs
