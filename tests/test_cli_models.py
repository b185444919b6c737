"""Whole models through the CLI: save_pretrained -> tasic compile -> tasic run -> compare with PyTorch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    ViTConfig,
    ViTModel,
)

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


def tasic_error(*args: str) -> str:
    """Run the CLI expecting a user error: exit code 1 and one `error: ...` line, no traceback."""
    result = subprocess.run([TASIC, *args], capture_output=True, text=True, check=False)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr[-3000:]
    return last.removeprefix("error: ")


def _char_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over single printable characters (no download)."""
    vocab = {"<unk>": 0, **{chr(c): c - 31 for c in range(32, 127)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>")


def test_cli_model_kind_and_size_errors(bert_dir: Path, gpt2_dir: Path, tmp_path: Path) -> None:
    """Non-causal models as LLMs, lengths over the maximum positions, a vision model directory, a build function
    that raises and a file of no known kind: one line each."""
    out = str(tmp_path / "x.tbin")
    not_causal = f"{bert_dir} (BertModel) is not a causal language model: --context / generate need one"
    assert tasic_error("compile", str(bert_dir), "-o", out, "--context", "32", "--seq-len", "8").startswith(not_causal)
    tokenizer_dir = tmp_path / "tokenizer"
    _char_tokenizer().save_pretrained(tokenizer_dir)
    generate = ("generate", str(bert_dir), "--prompt", "Hi", "--context", "32", "--prompt-len", "8", "--tokenizer")
    assert tasic_error(*generate, str(tokenizer_dir)).startswith(not_causal)
    assert tasic_error("compile", str(bert_dir), "-o", out, "--seq-len", "600") == (
        f"sequence length 600 is more than {bert_dir} (BertModel) supports: its config has max_position_embeddings = 512"
    )
    assert tasic_error("compile", str(gpt2_dir), "-o", out, "--seq-len", "8", "--context", "100") == (
        f"context 100 is more than {gpt2_dir} (GPT2LMHeadModel) supports: its config has n_positions = 64"
    )
    torch.manual_seed(0)
    vit_dir = tmp_path / "vit"
    ViTModel(
        ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ).save_pretrained(vit_dir)
    assert "(ViTModel) does not take token ids" in tasic_error("compile", str(vit_dir), "-o", out)
    script = tmp_path / "build.py"
    script.write_text("def build():\n    raise ValueError('user code bug')\n")
    assert tasic_error("compile", f"{script}:build", "-o", out) == f"{script}:build raised ValueError: user code bug"
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    assert tasic_error("compile", str(notes), "-o", out).startswith(f"'{notes}' is not a model tasic reads: give ")


def test_cli_outputs_that_are_inputs(tmp_path: Path) -> None:
    """`forward(x): return x` and an ONNX graph output that is its input (in a `.ONNX` file) compile to binaries
    that write the output: the copy equals the input after `tasic run`."""
    script = tmp_path / "identity.py"
    script.write_text(
        "import torch\n"
        "class Identity(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x\n"
        "def build():\n"
        "    return Identity(), (torch.randn(2, 3),)\n"
    )
    value = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])
    graph = onnx.helper.make_graph([], "passthrough", [value], [value])
    onnx_path = tmp_path / "passthrough.ONNX"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)]), str(onnx_path))
    x = np.random.default_rng(2).standard_normal((2, 3)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    for spec, output in ((f"{script}:build", "output"), (str(onnx_path), "x_out")):
        binary, out_npz = tmp_path / "m.tbin", tmp_path / "out.npz"
        tasic("compile", spec, "-o", str(binary), "--target", "tiny")
        tasic("run", str(binary), "--inputs", str(tmp_path / "in.npz"), "--outputs", str(out_npz))
        with np.load(out_npz) as data:
            assert data.files == [output]
            np.testing.assert_array_equal(data[output], x)


def test_cli_notes_float_outputs_of_another_type(tmp_path: Path) -> None:
    """An ONNX output declared float16 is computed in the compile dtype and returned as float32: compile says so
    (and says nothing for a float32 output); the run gives the cast values."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])
    half = onnx.helper.make_tensor_value_info("half", onnx.TensorProto.FLOAT16, [2, 3])
    same = onnx.helper.make_tensor_value_info("same", onnx.TensorProto.FLOAT, [2, 3])
    nodes = [
        onnx.helper.make_node("Cast", ["x"], ["half"], to=onnx.TensorProto.FLOAT16),
        onnx.helper.make_node("Neg", ["x"], ["same"]),
    ]
    graph = onnx.helper.make_graph(nodes, "casts", [x], [half, same])
    path = tmp_path / "casts.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)]), str(path))
    result = tasic("compile", str(path), "-o", str(tmp_path / "m.tbin"), "--target", "tiny")
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes == ["note: half (f16) computed in f32 and returned as float32 arrays"]
    value = np.random.default_rng(3).standard_normal((2, 3)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=value)
    tasic("run", str(tmp_path / "m.tbin"), "--inputs", str(tmp_path / "in.npz"), "--outputs", str(tmp_path / "o.npz"))
    with np.load(tmp_path / "o.npz") as data:
        assert data["half"].dtype == np.float32
        np.testing.assert_allclose(data["half"], value.astype(np.float16), rtol=1e-3)  # f32 values, not rounded
        np.testing.assert_array_equal(data["same"], -value)
