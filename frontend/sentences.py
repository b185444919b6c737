"""Sentence embeddings (sentence-transformers style) around a compiled BERT encoder.

Tokenise with the model directory's tokenizer.json, mean-pool the last hidden
state over the attention mask, and compute PyTorch's reference the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tasic.frontend.errors import FrontendError

DEMO_SENTENCES = (
    "A transformer-only chip runs one model family very fast.",
    "The cat sat on the mat.",
    "Systolic arrays multiply matrices with high utilisation.",
)


def tokenize(model_dir: Path, sentences: tuple[str, ...] | list[str], seq_len: int) -> dict[str, np.ndarray]:
    """input_ids and attention_mask, padded (or truncated) to seq_len."""
    from tokenizers import Tokenizer

    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise FrontendError(f"no tokenizer.json in {model_dir}: the demo needs the model's tokenizer")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(seq_len)
    tokenizer.enable_padding(length=seq_len)
    encoded = tokenizer.encode_batch(list(sentences))
    return {
        "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
    }


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Average of the token vectors the mask keeps, per sentence."""
    weights = mask[..., None].astype(np.float64)
    return (hidden.astype(np.float64) * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)


def torch_embeddings(model_dir: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """PyTorch's mean-pooled embeddings of the same inputs (fp32 reference)."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        hidden = model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).last_hidden_state.numpy()
    return mean_pool(hidden, inputs["attention_mask"])


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
