"""Causal LMs with a static KV cache: @prefill and @decode entry points sharing weights and cache state.

    llm = import_llm("models/llama-tiny", batch=4, context=32, prompt_len=8)  # HF dir or .gguf file
    llm.module   # builtin.module { func.func @prefill(...), func.func @decode(...) }
    llm.entries["decode"].state_names  # ["cache.0.keys", "cache.0.values", ...]
    tokens = greedy_generate(step, prompts, 16, prompt_len=8, context=32)

Both entry points take `input_ids` [B, S], `position_ids` [B, S] (per
sequence), `cache_position` [S] (the cache slots written, shared by the
batch) and `attention_mask` [B, C] (1 = a valid slot), then the cache state;
they return `logits` [B, S, V], then the updated cache. S is the prompt
bucket length for @prefill and 1 for @decode. Prompts of different lengths
are left-padded to the bucket (slot = index in the padded batch, so every
sequence writes the same slots).

The cache is one `[B, kv_heads, C, head_dim]` buffer of keys and one of values
per layer (`cache.<layer>.keys` / `.values`), written with `index_copy_`
along dim 2 at `cache_position`, so torch.export records buffer mutations
and the importer turns them into `tfm.index_copy` and function state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.export import ExportedProgram
from transformers.cache_utils import Cache, CacheLayerMixin
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

from tasic.frontend.errors import FrontendError
from tasic.frontend.graph_builder import dtype_of, to_numpy
from tasic.frontend.hf import check_causal_lm, check_positions, load_model, load_tokenizer
from tasic.frontend.hf_attention import ATTENTION
from tasic.frontend.torch_import import export_module, import_exported_program
from tasic.ir import tfm
from tasic.ir.weights import WeightStore

INPUT_NAMES = ("input_ids", "position_ids", "cache_position", "attention_mask")
"""User inputs of both entry points, in argument order."""

ENTRY_POINTS = ("prefill", "decode")

Step = Callable[[str, Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
"""step(entry point, user inputs) -> outputs (at least "logits"); the callee keeps the cache state."""


# ------------------------------------------------------------------ the cache


class _CacheBuffers(torch.nn.Module):
    """Keys and values of one layer, as buffers [batch, kv_heads, context, head_dim]."""

    def __init__(self, shape: tuple[int, int, int, int], dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("keys", torch.zeros(shape, dtype=dtype))
        self.register_buffer("values", torch.zeros(shape, dtype=dtype))


class _SlotLayer(CacheLayerMixin):
    """HF cache layer over a `_CacheBuffers`: writes new keys/values at `cache_position`, returns the whole cache."""

    is_compileable = True
    is_sliding = False

    def __init__(self, buffers: _CacheBuffers, cache_position: torch.Tensor) -> None:
        super().__init__()
        self.keys, self.values = buffers.keys, buffers.values
        self.cache_position = cache_position
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Nothing to allocate: the buffers exist."""

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new states at their slots; attention reads all C slots (the mask hides the others)."""
        self.keys.index_copy_(2, self.cache_position, key_states)
        self.values.index_copy_(2, self.cache_position, value_states)
        return self.keys, self.values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """Masks span all slots: (kv_length, kv_offset) = (C, 0)."""
        return self.keys.shape[2], 0

    def get_seq_length(self) -> torch.Tensor:
        """The first slot written by this call (HF takes it as the first query's position in the mask)."""
        return self.cache_position[0]

    def get_max_length(self) -> int:
        """The context C."""
        return self.keys.shape[2]


class CachedCausalLM(torch.nn.Module):
    """A HF causal LM with a static KV cache in registered buffers, for torch.export.

    The LM's submodules are registered directly on this module, so weights keep
    their HF names ("model.layers.0.self_attn.q_proj.weight"); the cache is
    `cache.<layer>.keys` / `cache.<layer>.values`.
    """

    def __init__(self, model: torch.nn.Module, batch: int, context: int) -> None:
        super().__init__()
        config = model.config.get_text_config()
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        dtype = next(model.parameters()).dtype  # the cache holds keys and values in the model's type
        self._causal_lm = (model,)  # a tuple: not a submodule, its children are ours
        for name, child in model.named_children():
            self.add_module(name, child)
        shape = (batch, kv_heads, context, head_dim)
        self.cache = torch.nn.ModuleList(_CacheBuffers(shape, dtype) for _ in range(config.num_hidden_layers))

    def forward(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor,
        cache_position: torch.Tensor,
        attention_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Logits [B, S, V] for `input_ids` [B, S] at `cache_position` [S]; the cache is updated in place."""
        cache = Cache(layers=[_SlotLayer(buffers, cache_position) for buffers in self.cache])
        model = self._causal_lm[0]
        output = model(
            input_ids=input_ids,
            position_ids=position_ids,
            attention_mask=attention_mask,
            past_key_values=cache,
            use_cache=True,
        )
        return output.logits


@contextmanager
def _tasic_attention(model: torch.nn.Module) -> Iterator[None]:
    """Use the "tasic" attention implementation (frontend/hf_attention.py) for the duration."""
    previous = model.config._attn_implementation
    model.set_attn_implementation(ATTENTION)
    if model.config._attn_implementation != ATTENTION:
        raise FrontendError(f"{type(model).__name__} cannot switch its attention implementation (KV-cache export)")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def example_step_inputs(batch: int, length: int, context: int, start: int = 0) -> dict[str, torch.Tensor]:
    """Inputs of one step writing slots start..start+length-1 with every slot up to them valid."""
    mask = torch.zeros(batch, context, dtype=torch.int64)
    mask[:, : start + length] = 1
    positions = torch.arange(start, start + length)
    ids = torch.zeros(batch, length, dtype=torch.int64)
    return dict(zip(INPUT_NAMES, (ids, positions.expand(batch, length).clone(), positions, mask), strict=True))


def check_llm(model: torch.nn.Module, context: int, prompt_len: int, spec: str | Path | None = None) -> None:
    """Raise unless `model` is a causal LM embedding `context` positions and 0 < `prompt_len` < `context`."""
    check_causal_lm(model, spec)
    if not 0 < prompt_len < context:
        raise FrontendError(f"prompt length {prompt_len} must be between 1 and the context {context} - 1")
    check_positions(model, context, "context", spec)


def export_llm(
    model: torch.nn.Module, batch: int, context: int, prompt_len: int, spec: str | Path | None = None
) -> tuple[ExportedProgram, ExportedProgram]:
    """(prefill, decode) programs of a HF causal LM with a static cache of `context` slots (`spec`: its path)."""
    check_llm(model, context, prompt_len, spec)
    wrapper = CachedCausalLM(model, batch, context).eval()
    label = str(spec) if spec else None
    with _tasic_attention(model), torch.no_grad():
        prefill = export_module(wrapper, example_step_inputs(batch, prompt_len, context), label=label)
        decode = export_module(wrapper, example_step_inputs(batch, 1, context, start=prompt_len), label=label)
    return prefill, decode


# --------------------------------------------------------------- the import


@dataclass
class EntryPoint:
    """Argument, result and state names of one function of an `ImportedLLM`."""

    input_names: list[str]
    output_names: list[str]
    state_names: list[str]


@dataclass
class ImportedLLM:
    """@prefill and @decode in one module, with their shared weights and cache state."""

    module: ModuleOp
    weights: WeightStore
    entries: dict[str, EntryPoint]
    batch: int
    context: int
    prompt_len: int
    tokenizer: Any = field(default=None, repr=False)

    def initial_state(self) -> dict[str, np.ndarray]:
        """Zeroed cache state, by state name."""
        function = next(op for op in self.module.ops if isinstance(op, func.FuncOp))
        entry = self.entries[function.sym_name.data]
        return {
            name: np.zeros(tfm.shape_of(arg), dtype=to_numpy(torch.empty(0, dtype=dtype_of(arg))).dtype)
            for name, arg in zip(entry.input_names, function.args, strict=True)
            if name in entry.state_names
        }


def import_llm(model: torch.nn.Module | str | Path, batch: int, context: int, prompt_len: int) -> ImportedLLM:
    """Export and import a causal LM (module, HF directory or .gguf file) as @prefill and @decode."""
    tokenizer, spec = None, None
    if not isinstance(model, torch.nn.Module):
        spec = model
        model = load_model(spec)
        check_llm(model, context, prompt_len, spec)  # before loading the tokenizer
        tokenizer = load_tokenizer(spec)
    weights = WeightStore()
    functions, entries = [], {}
    for name, program in zip(ENTRY_POINTS, export_llm(model, batch, context, prompt_len, spec), strict=True):
        graph = import_exported_program(program, ["logits"], function_name=name, weights=weights)
        function = next(op for op in graph.module.ops if isinstance(op, func.FuncOp))
        function.detach()
        functions.append(function)
        entries[name] = EntryPoint(graph.input_names, graph.output_names, graph.state_names)
    module = ModuleOp(functions)
    module.verify()
    return ImportedLLM(module, weights, entries, batch, context, prompt_len, tokenizer)


# ------------------------------------------------------------ driving steps


def prefill_inputs(
    prompts: Sequence[Sequence[int]], prompt_len: int, context: int, pad_id: int = 0
) -> dict[str, np.ndarray]:
    """@prefill inputs for prompts left-padded to `prompt_len` (HF's convention: padding positions are 1)."""
    if any(not 0 < len(prompt) <= prompt_len for prompt in prompts):
        raise FrontendError(f"every prompt needs 1 to {prompt_len} tokens, got lengths {[len(p) for p in prompts]}")
    ids = np.full((len(prompts), prompt_len), pad_id, dtype=np.int64)
    mask = np.zeros((len(prompts), context), dtype=np.int64)
    for row, prompt in enumerate(prompts):
        ids[row, prompt_len - len(prompt) :] = prompt
        mask[row, prompt_len - len(prompt) : prompt_len] = 1
    positions = np.where(mask[:, :prompt_len] == 1, np.cumsum(mask[:, :prompt_len], axis=1) - 1, 1)
    slots = np.arange(prompt_len, dtype=np.int64)
    return dict(zip(INPUT_NAMES, (ids, positions, slots, mask), strict=True))


def greedy_generate(
    step: Step,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    prompt_len: int,
    context: int,
    pad_id: int = 0,
) -> list[list[int]]:
    """Greedy decoding: one @prefill call, then @decode calls; returns the new tokens of each prompt.

    `step` keeps the cache between calls (`StatefulStep` does for a stateless function).
    """
    if prompt_len + max_new_tokens - 1 > context:
        steps = max_new_tokens - 1
        raise FrontendError(f"{prompt_len} prompt slots + {steps} decode steps exceed the context {context}")
    prefill = prefill_inputs(prompts, prompt_len, context, pad_id)
    mask = prefill["attention_mask"]
    positions = mask.sum(1, keepdims=True)  # each sequence's next position
    tokens = np.asarray(step("prefill", prefill)["logits"])[:, -1].argmax(-1)
    generated = [tokens]
    for slot in range(prompt_len, prompt_len + max_new_tokens - 1):
        mask[:, slot] = 1
        values = (tokens[:, None].astype(np.int64), positions, np.array([slot], dtype=np.int64), mask.copy())
        tokens = np.asarray(step("decode", dict(zip(INPUT_NAMES, values, strict=True)))["logits"])[:, -1].argmax(-1)
        generated.append(tokens)
        positions = positions + 1
    return np.stack(generated, axis=1).tolist()


class StatefulStep:
    """A `Step` over a stateless `run(entry, inputs) -> outputs` whose inputs and outputs include the state.

    The state starts at `initial` (e.g. `ImportedLLM.initial_state()`) and is
    replaced by each call's updated state; `outputs` are returned without it.
    """

    def __init__(
        self, run: Callable[[str, dict[str, np.ndarray]], Mapping[str, np.ndarray]], initial: Mapping[str, np.ndarray]
    ) -> None:
        self.run = run
        self.state = dict(initial)

    def __call__(self, entry: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one step, carrying the state."""
        outputs = dict(self.run(entry, {**inputs, **self.state}))
        for name in self.state:
            self.state[name] = outputs.pop(name)
        return outputs
