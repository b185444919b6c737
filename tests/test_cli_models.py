"""Whole models through the CLI: save_pretrained -> tasic compile -> tasic run -> compare with PyTorch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

TASIC = str(Path(sys.prefix) / "bin" / "tasic")
# bf16 stores every activation in bf16 (8 bits of mantissa): a 2-layer model's
# outputs stay within this fraction of the output range of the f32 result.
BF16_RELATIVE_BOUND = 0.03


def tasic(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI; fail the test with its stderr when it fails."""
    result = subprocess.run([TASIC, *args], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer GPT-2 LM saved as a Hugging Face model directory."""
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=64, bos_token_id=0, eos_token_id=0)
    path = tmp_path_factory.mktemp("gpt2")
    GPT2LMHeadModel(config).eval().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT encoder saved as a Hugging Face model directory."""
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=100
    )
    path = tmp_path_factory.mktemp("bert")
    BertModel(config).eval().save_pretrained(path)
    return path


def _compile_and_run(model_dir: Path, inputs: dict[str, np.ndarray], dtype: str, tmp: Path) -> dict[str, np.ndarray]:
    batch, seq = inputs["input_ids"].shape
    binary, in_npz, out_npz = tmp / f"m-{dtype}.tbin", tmp / "in.npz", tmp / f"out-{dtype}.npz"
    tasic("compile", str(model_dir), "-o", str(binary), "--target", "tiny", "--dtype", dtype,
          "--batch", str(batch), "--seq-len", str(seq))  # fmt: skip
    np.savez(in_npz, **inputs)
    tasic("run", str(binary), "--inputs", str(in_npz), "--outputs", str(out_npz))
    with np.load(out_npz) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_gpt2_logits_match_torch(gpt2_dir: Path, tmp_path: Path, dtype: str) -> None:
    """Tiny GPT-2 logits: 1e-4 in f32, the documented bound in bf16."""
    ids = np.random.default_rng(0).integers(0, 100, (2, 12))
    model = GPT2LMHeadModel.from_pretrained(gpt2_dir).eval()
    with torch.no_grad():
        ref = model(torch.from_numpy(ids)).logits.numpy()
    got = _compile_and_run(gpt2_dir, {"input_ids": ids}, dtype, tmp_path)["logits"]
    _assert_close(got, ref, dtype)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_bert_hidden_states_match_torch(bert_dir: Path, tmp_path: Path, dtype: str) -> None:
    """Tiny BERT with a padding mask: 1e-4 in f32, the documented bound in bf16."""
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 100, (2, 10))
    mask = np.ones((2, 10), dtype=np.int64)
    mask[1, 6:] = 0
    model = BertModel.from_pretrained(bert_dir).eval()
    with torch.no_grad():
        ref = model(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
    got = _compile_and_run(bert_dir, {"input_ids": ids, "attention_mask": mask}, dtype, tmp_path)
    _assert_close(got["last_hidden_state"], ref, dtype)


def _assert_close(got: np.ndarray, ref: np.ndarray, dtype: str) -> None:
    assert got.shape == ref.shape
    error = float(np.abs(got - ref).max())
    if dtype == "f32":
        assert error <= 1e-4, error
    else:
        assert error <= BF16_RELATIVE_BOUND * float(np.abs(ref).max()), error
