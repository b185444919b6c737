"""Load models to compile: Hugging Face directories, GGUF files and `file.py:function` entry points.

A model spec is a save_pretrained directory, a .gguf file or "file.py:function"::

    graph = import_model("models/gpt2-tiny", batch=1, seq_len=64)
    graph = import_model("models/SmolLM2-135M-Instruct.Q4_1.gguf", batch=1, seq_len=64)
    graph = import_model("my_model.py:build", batch=1, seq_len=64)  # build() -> (module, example_inputs)
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import transformers

from tasic.frontend.errors import FrontendError
from tasic.frontend.gguf import check_gguf
from tasic.frontend.hf_attention import ATTENTION
from tasic.frontend.torch_import import ImportedGraph, import_module

ExampleInputs = Mapping[str, torch.Tensor] | tuple[torch.Tensor, ...]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _from_pretrained(model_class: Any, path: str | Path, location: Path, **kwargs: Any) -> torch.nn.Module:
    """`model_class.from_pretrained(location, **kwargs)` in eval mode without cache, with the first attention
    implementation the architecture accepts: SDPA, else tasic's (e.g. Gemma-2's soft-capping), else eager."""
    try:
        for attention in ("sdpa", ATTENTION):
            try:
                return _inference_mode(model_class.from_pretrained(location, attn_implementation=attention, **kwargs))
            except ValueError:  # transformers' answer to an unsupported implementation
                continue
        return _inference_mode(model_class.from_pretrained(location, attn_implementation="eager", **kwargs))
    except Exception as err:
        raise FrontendError(f"transformers could not load '{path}': {_first_line(err)}") from err


def _inference_mode(model: torch.nn.Module) -> torch.nn.Module:
    """`model` in eval mode, its whole-sequence forward returning no KV cache."""
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False
    return model.eval()


def load_model_dir(path: str | Path) -> torch.nn.Module:
    """The model saved by `save_pretrained` in `path`, in eval mode with SDPA attention and no KV cache.

    The class is `config.architectures[0]` (e.g. GPT2LMHeadModel), else AutoModel; architectures
    without SDPA support load with tasic's attention function (frontend/hf_attention.py).
    """
    directory = Path(path)
    if not directory.exists():
        raise FrontendError(f"model path '{path}' does not exist")
    if not (directory / "config.json").is_file():
        raise FrontendError(f"model directory '{path}' has no config.json (expected a save_pretrained directory)")
    try:
        config = transformers.AutoConfig.from_pretrained(directory)
    except Exception as err:
        raise FrontendError(f"transformers could not load '{path}': {_first_line(err)}") from err
    architectures = config.architectures or []
    model_class = getattr(transformers, architectures[0], None) if architectures else None
    return _from_pretrained(model_class or transformers.AutoModel, path, directory, config=config)


def load_gguf(path: str | Path) -> torch.nn.Module:
    """The causal LM of a GGUF file, dequantised to float32 (like `load_model_dir` otherwise)."""
    check_gguf(path)
    file = Path(path)
    return _from_pretrained(
        transformers.AutoModelForCausalLM, path, file.parent, gguf_file=file.name, dtype=torch.float32
    )


def load_model(path: str | Path) -> torch.nn.Module:
    """A save_pretrained directory (`load_model_dir`) or a .gguf file (`load_gguf`)."""
    return load_gguf(path) if str(path).endswith(".gguf") else load_model_dir(path)


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer of a .gguf file, or of a model directory (None when the directory has none)."""
    file = Path(path)
    if file.suffix == ".gguf":
        check_gguf(file)
        location, options = file.parent, {"gguf_file": file.name}
    elif not any(file.glob("tokenizer*")):
        return None
    else:
        location, options = file, {}
    try:
        return transformers.AutoTokenizer.from_pretrained(location, **options)
    except Exception as err:
        raise FrontendError(f"transformers could not load the tokenizer of '{path}': {_first_line(err)}") from err


def is_encoder(model: torch.nn.Module) -> bool:
    """Whether a Hugging Face model attends bidirectionally (BERT-like) rather than causally."""
    config = model.config
    decoder = getattr(config, "is_decoder", False) or getattr(config, "is_encoder_decoder", False)
    if decoder or type(model).__name__.endswith(("ForCausalLM", "LMHeadModel")):
        return False
    causal_types = transformers.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    masked_types = transformers.models.auto.modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES
    return config.model_type in masked_types or config.model_type not in causal_types


def example_inputs(model: torch.nn.Module, batch: int, seq_len: int) -> dict[str, torch.Tensor]:
    """Random `input_ids` [batch, seq_len] (seeded), plus an all-ones `attention_mask` for encoders.

    Decoders get no mask: their causal mask then folds to a constant and
    tfm.attention gets `causal = true`.
    """
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq_len), generator=generator)
    inputs = {"input_ids": ids}
    if is_encoder(model):
        inputs["attention_mask"] = torch.ones_like(ids)
    return inputs


def load_python_entry(
    spec: str, batch: int | None = None, seq_len: int | None = None
) -> tuple[torch.nn.Module, ExampleInputs]:
    """Import `file.py` and call `function()` from "file.py:function"; it returns (module, example_inputs).

    `batch` and `seq_len` are passed as keyword arguments when the function declares them.
    """
    file_name, _, function_name = spec.rpartition(":")
    if not file_name.endswith(".py") or not function_name:
        raise FrontendError(f"expected 'file.py:function', got '{spec}'")
    path = Path(file_name)
    if not path.is_file():
        raise FrontendError(f"model path '{file_name}' does not exist")
    module_spec = importlib.util.spec_from_file_location(f"tasic_model_{path.stem}", path)
    assert module_spec is not None and module_spec.loader is not None
    python_module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = python_module
    try:
        module_spec.loader.exec_module(python_module)
    except Exception as err:
        raise FrontendError(f"could not import '{file_name}': {_first_line(err)}") from err
    function = getattr(python_module, function_name, None)
    if not callable(function):
        raise FrontendError(f"'{file_name}' has no function '{function_name}'")
    parameters = inspect.signature(function).parameters
    sizes = {name: value for name, value in (("batch", batch), ("seq_len", seq_len)) if value is not None}
    result = function(**{name: value for name, value in sizes.items() if name in parameters})
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], torch.nn.Module)):
        raise FrontendError(f"'{spec}' must return (torch.nn.Module, example_inputs)")
    model, inputs = result
    return model.eval(), inputs


def import_model(
    model_spec: str, batch: int, seq_len: int, input_shapes: dict[str, tuple[int, ...]] | None = None
) -> ImportedGraph:
    """Load a save_pretrained directory, a .gguf or .onnx file or a "file.py:function" entry and import it to tfm.

    `input_shapes` binds an ONNX graph's dynamic input dimensions.
    """
    if model_spec.endswith(".onnx"):
        from tasic.frontend.onnx_import import import_onnx

        return import_onnx(model_spec, input_shapes)
    file_name, separator, _ = model_spec.rpartition(":")
    if separator and file_name.endswith(".py"):
        model, inputs = load_python_entry(model_spec, batch, seq_len)
    else:
        model = load_model(model_spec)
        inputs = example_inputs(model, batch, seq_len)
    return import_module(model, inputs)
