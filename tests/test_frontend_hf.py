"""Loading models for import: save_pretrained directories, file.py:function entries and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel

from tasic.frontend.errors import FrontendError
from tasic.frontend.hf import example_inputs, import_model, load_model_dir, load_python_entry


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding tiny GPT-2 and BERT checkpoints written by save_pretrained."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=100, n_positions=64)).save_pretrained(
        root / "gpt2"
    )
    bert = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, vocab_size=100)
    BertModel(bert).save_pretrained(root / "bert")
    return root


def test_decoder_directory(saved: Path) -> None:
    """GPT-2: the LM-head class from config.architectures, input_ids only, logits out."""
    model = load_model_dir(saved / "gpt2")
    assert type(model).__name__ == "GPT2LMHeadModel" and not model.training
    assert list(example_inputs(model, 2, 16)) == ["input_ids"]
    graph = import_model(str(saved / "gpt2"), batch=1, seq_len=16)
    assert graph.input_names == ["input_ids"] and graph.output_names == ["logits"]


def test_encoder_directory(saved: Path) -> None:
    """BERT: an attention mask input and both ModelOutput entries."""
    graph = import_model(str(saved / "bert"), batch=2, seq_len=8)
    assert graph.input_names == ["input_ids", "attention_mask"]
    assert graph.output_names == ["last_hidden_state", "pooler_output"]


def test_python_entry_gets_sizes(tmp_path: Path) -> None:
    """file.py:function is called with the batch and seq_len it declares."""
    script = tmp_path / "model.py"
    script.write_text(
        "import torch\n"
        "def build(batch, seq_len):\n"
        "    return torch.nn.Linear(4, 2), (torch.randn(batch, seq_len, 4),)\n"
    )
    model, inputs = load_python_entry(f"{script}:build", batch=3, seq_len=5)
    assert isinstance(model, torch.nn.Linear) and inputs[0].shape == (3, 5, 4)
    graph = import_model(f"{script}:build", batch=3, seq_len=5)
    assert graph.input_names == ["input"] and graph.output_names == ["output"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{root}/missing", "model path '{root}/missing' does not exist"),
        ("{root}/empty", "model directory '{root}/empty' has no config.json"),
        ("{root}/broken", "transformers could not load '{root}/broken': "),
        ("{root}/model.py:absent", "'{root}/model.py' has no function 'absent'"),
        ("{root}/missing.py:build", "model path '{root}/missing.py' does not exist"),
    ],
)
def test_errors_are_one_line(tmp_path: Path, spec: str, message: str) -> None:
    """Each user mistake is a FrontendError with a single explanatory line."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text('{"model_type": "gpt2"}')
    (tmp_path / "model.py").write_text("def build():\n    return None\n")
    with pytest.raises(FrontendError) as error:
        import_model(spec.format(root=tmp_path), batch=1, seq_len=8)
    assert str(error.value).startswith(message.format(root=tmp_path))
    assert "\n" not in str(error.value)
