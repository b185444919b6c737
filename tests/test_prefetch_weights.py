"""prefetch-weights moves loads, never changes a result: with and without it an LLM's logits are equal bit
for bit, in f32 and with FP8 linears (whose separate dequantisation kernels load a scale tile twice)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tasic import llm
from tasic.backend.target import load_target
from tasic.compiler import default_pipeline


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer GQA Llama whose kernels on `tiny` have weights to prefetch."""
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=576, num_hidden_layers=2, num_attention_heads=9, num_key_value_heads=3,
        intermediate_size=1536, vocab_size=512, max_position_embeddings=256, tie_word_embeddings=True,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("llama")
    LlamaForCausalLM(config).eval().save_pretrained(path)
    return path


def _logits(
    model: Path, quantize: str | None, prefetch: bool, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[object], list[np.ndarray]]:
    """The code, and prefill and two decode steps' logits, compiled with or without prefetch-weights."""

    def pipeline(*args: object, **kwargs: object) -> str:
        passes = default_pipeline(*args, **kwargs).split(",")  # type: ignore[arg-type]
        return ",".join(p for p in passes if prefetch or not p.startswith("prefetch-weights"))

    monkeypatch.setattr(llm, "default_pipeline", pipeline)
    target = load_target("tiny")
    binary, _ = llm.compile_llm(str(model), target, "f32", 1, 128, 32, quantize=quantize)
    session = llm.LlmSession(binary, target)
    logits: list[np.ndarray] = []
    prefill, decode = session.prefill, session.decode
    session.prefill = lambda inputs: logits.append(prefill(inputs)) or logits[-1]  # type: ignore[method-assign]
    session.decode = lambda inputs: logits.append(decode(inputs)) or logits[-1]  # type: ignore[method-assign]
    llm.generate(session, [list(range(3, 35))], 3)
    return binary.code, logits


@pytest.mark.parametrize("quantize", [None, "fp8"])
def test_prefetched_weights_give_the_same_logits(
    llama_dir: Path, quantize: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, moved = _logits(llama_dir, quantize, True, monkeypatch)
    unmoved_code, kept = _logits(llama_dir, quantize, False, monkeypatch)
    assert code != unmoved_code  # loads moved
    assert len(moved) == len(kept) == 3
    for a, b in zip(moved, kept, strict=True):
        np.testing.assert_array_equal(a, b)
