"""Loading models for import: save_pretrained directories, file.py:function entries and their errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, ViTConfig, ViTModel

from tasic.frontend.calibrate import calibrate_llm
from tasic.frontend.errors import FrontendError
from tasic.frontend.hf import example_inputs, import_model, load_model_dir, load_python_entry
from tasic.frontend.llm import import_llm


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding tiny GPT-2 and BERT checkpoints written by save_pretrained."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=100, n_positions=64)).save_pretrained(
        root / "gpt2"
    )
    bert = BertConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=100,
        max_position_embeddings=128,
    )
    BertModel(bert).save_pretrained(root / "bert")
    vit = ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=16, patch_size=8
    )
    ViTModel(vit).save_pretrained(root / "vit")
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


def _one_line_error(call: Callable[[], object]) -> str:
    with pytest.raises(FrontendError) as error:
        call()
    message = str(error.value)
    assert "\n" not in message
    return message


def test_vision_model_directory_is_refused(saved: Path) -> None:
    """A model without token ids (ViT) is named, with the file.py:function alternative."""
    path = saved / "vit"
    assert _one_line_error(lambda: import_model(str(path), batch=1, seq_len=8)) == (
        f"{path} (ViTModel) does not take token ids: only text models are imported from a model directory or "
        ".gguf; give another model as file.py:function returning (module, example inputs)"
    )


def test_encoder_is_not_an_llm(saved: Path) -> None:
    """BERT as an LLM (prefill / decode, calibration) is refused before any export."""
    path = saved / "bert"
    expected = f"{path} (BertModel) is not a causal language model: --context / generate need one (e.g. Llama, GPT-2)"
    assert _one_line_error(lambda: import_llm(str(path), batch=1, context=32, prompt_len=8)) == expected
    assert _one_line_error(lambda: import_llm(BertModel.from_pretrained(path), 1, 32, 8)).startswith(
        "BertModel is not a causal language model"
    )
    assert _one_line_error(lambda: calibrate_llm(str(path), ["Hello"])) == (
        f"{path} (BertModel) is not a causal language model: calibration needs one (e.g. Llama, GPT-2)"
    )


def test_lengths_beyond_the_maximum_positions(saved: Path) -> None:
    """--seq-len and --context are checked against max_position_embeddings / n_positions, as the config names it."""
    bert, gpt2 = saved / "bert", saved / "gpt2"
    assert _one_line_error(lambda: import_model(str(bert), batch=1, seq_len=200)) == (
        f"sequence length 200 is more than {bert} (BertModel) supports: its config has max_position_embeddings = 128"
    )
    assert _one_line_error(lambda: import_model(str(gpt2), batch=1, seq_len=65)) == (
        f"sequence length 65 is more than {gpt2} (GPT2LMHeadModel) supports: its config has n_positions = 64"
    )
    assert _one_line_error(lambda: import_llm(str(gpt2), batch=1, context=80, prompt_len=8)) == (
        f"context 80 is more than {gpt2} (GPT2LMHeadModel) supports: its config has n_positions = 64"
    )
    graph = import_model(str(gpt2), batch=1, seq_len=64)  # the maximum itself is fine
    assert graph.output_names == ["logits"]


def test_python_entry_that_raises(tmp_path: Path) -> None:
    """The user's build function raising is one line naming the entry and the exception."""
    script = tmp_path / "model.py"
    script.write_text("def build():\n    raise ValueError('bad width\\nsecond line')\n")
    spec = f"{script}:build"
    assert _one_line_error(lambda: import_model(spec, batch=1, seq_len=8)) == f"{spec} raised ValueError: bad width"


def test_export_failure_names_the_entry(tmp_path: Path) -> None:
    """An exception inside forward during torch.export is one line naming the entry and the module class."""
    script = tmp_path / "model.py"
    script.write_text(
        "import torch\n"
        "class Broken(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x.view(7, -1)\n"
        "def build():\n"
        "    return Broken(), (torch.randn(2, 3),)\n"
    )
    message = _one_line_error(lambda: import_model(f"{script}:build", batch=1, seq_len=8))
    assert message.startswith(f"torch.export failed on {script}:build (Broken): RuntimeError: ")
