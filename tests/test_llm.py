"""LLM binaries: prefill + bucketed decode over a KV cache in HBM, against HF greedy decoding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tasic.backend.target import load_target
from tasic.frontend.errors import FrontendError
from tasic.isa_sim import Machine
from tasic.llm import LlmSession, compile_llm, generate

TINY = load_target("tiny")


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer GQA Llama saved with save_pretrained."""
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, vocab_size=128, max_position_embeddings=512,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("llama")
    LlamaForCausalLM(config).eval().save_pretrained(path)
    return path


def hf_greedy(model_dir: Path, prompt: list[int], new_tokens: int) -> list[int]:
    """Transformers' own greedy continuation."""
    model = LlamaForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]), max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
        )
    return out[0, len(prompt) :].tolist()


def test_batch_of_four_prompts_decodes_like_hf(llama_dir: Path) -> None:
    """Four prompts of different lengths, left-padded in one batch: 16 greedy tokens each equal HF's."""
    binary, _ = compile_llm(str(llama_dir), TINY, "f32", batch=4, context=64, prompt_len=8)
    prompts = [[5, 17, 99, 3, 42], [7, 8], [100, 1, 2, 3, 4, 5, 6, 7], [64]]
    got = generate(LlmSession(binary, TINY), prompts, 16)
    assert got == [hf_greedy(llama_dir, p, 16) for p in prompts]


def test_decode_reads_the_cache(llama_dir: Path) -> None:
    """Decode cycles grow with the context bucket and stay far below a prefill of that length."""
    binary, _ = compile_llm(str(llama_dir), TINY, "f32", batch=1, context=256, prompt_len=192)
    machine = Machine(binary, TINY, timing_only=True)
    decode = [machine.run(f"decode_{n}").report.total_cycles for n in (64, 128, 256)]
    prefill = machine.run("prefill").report.total_cycles
    assert decode[0] < decode[1] < decode[2]
    assert decode[2] * 10 < prefill


def test_too_long_prompt_and_too_large_batch(llama_dir: Path) -> None:
    """One-line errors naming the compiled limits."""
    binary, _ = compile_llm(str(llama_dir), TINY, "f32", batch=1, context=64, prompt_len=4)
    session = LlmSession(binary, TINY)
    with pytest.raises(FrontendError, match="at most 4"):
        generate(session, [[1, 2, 3, 4, 5]], 2)
    with pytest.raises(FrontendError, match="batch of 1"):
        generate(session, [[1], [2]], 2)
