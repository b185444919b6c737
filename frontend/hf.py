"""Load models to compile: Hugging Face directories, GGUF files and `file.py:function` entry points.

A model spec is a save_pretrained directory, a .gguf file or "file.py:function"::

    graph = import_model("models/gpt2-tiny", batch=1, seq_len=64)
    graph = import_model("models/SmolLM2-135M-Instruct.Q4_1.gguf", batch=1, seq_len=64)
    graph = import_model("my_model.py:build", batch=1, seq_len=64)  # build() -> (module, example_inputs)
    graph = import_model("model.onnx", batch=1, seq_len=64)  # also an ONNX file under another extension
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


MODEL_KINDS = "a Hugging Face model directory (save_pretrained), a .gguf or .onnx file, or file.py:function"
"""What a model spec may be, for error messages."""


def load_model_dir(path: str | Path) -> torch.nn.Module:
    """The model saved by `save_pretrained` in `path`, in eval mode with SDPA attention and no KV cache.

    The class is `config.architectures[0]` (e.g. GPT2LMHeadModel), else AutoModel; architectures
    without SDPA support load with tasic's attention function (frontend/hf_attention.py).
    """
    directory = Path(path)
    if not directory.exists():
        raise FrontendError(f"model path '{path}' does not exist")
    if not directory.is_dir():
        raise FrontendError(f"'{path}' is not a model tasic reads: give {MODEL_KINDS}")
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


def is_gguf(path: str | Path) -> bool:
    """Whether `path` names a GGUF file (by its extension, in any case)."""
    return str(path).lower().endswith(".gguf")


def load_model(path: str | Path) -> torch.nn.Module:
    """A save_pretrained directory (`load_model_dir`) or a .gguf file (`load_gguf`)."""
    return load_gguf(path) if is_gguf(path) else load_model_dir(path)


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer of a .gguf file, or of a model directory (None when the directory has none)."""
    file = Path(path)
    if is_gguf(file):
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


def model_label(spec: str | Path | None, model: torch.nn.Module) -> str:
    """'<spec> (<class>)', or the class name alone, for messages."""
    return f"{spec} ({type(model).__name__})" if spec else type(model).__name__


def _vocab_size(model: torch.nn.Module) -> int | None:
    """The token vocabulary size of a text model (None when the model does not take token ids)."""
    config = getattr(model, "config", None)
    if config is None or "input_ids" not in inspect.signature(model.forward).parameters:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    size = getattr(text, "vocab_size", None)
    return size if isinstance(size, int) and size > 0 else None


def check_text_model(model: torch.nn.Module, spec: str | Path | None = None) -> None:
    """Raise unless `model` takes token ids (`input_ids` and a config vocab_size), the only inputs made up."""
    if _vocab_size(model) is None:
        raise FrontendError(
            f"{model_label(spec, model)} does not take token ids: only text models are imported from a model "
            "directory or .gguf; give another model as file.py:function returning (module, example inputs)"
        )


def max_positions(model: torch.nn.Module) -> tuple[str, int] | None:
    """(config key, value) of the most positions the model embeds: max_position_embeddings, n_positions or n_ctx,
    whichever its (text) config has; None without one."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    saved = text.to_dict() if hasattr(text, "to_dict") else vars(text)
    keys = ("max_position_embeddings", "n_positions", "n_ctx")
    found = [(key, saved.get(key)) for key in keys] + [(key, getattr(text, key, None)) for key in keys]
    for key, value in found:  # the key as config.json spells it first, then aliases (attribute_map)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return key, value
    return None


def check_positions(model: torch.nn.Module, length: int, what: str, spec: str | Path | None = None) -> None:
    """Raise when `length` tokens (`what`: e.g. "sequence length 200") exceed the model's maximum positions."""
    limit = max_positions(model)
    if limit is not None and length > limit[1]:
        key, value = limit
        raise FrontendError(
            f"{what} {length} is more than {model_label(spec, model)} supports: its config has {key} = {value}"
        )


def is_causal_lm(model: torch.nn.Module) -> bool:
    """Whether a Hugging Face model is a causal language model (next-token logits, e.g. LlamaForCausalLM)."""
    causal = transformers.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()
    names = {name for entry in causal for name in ((entry,) if isinstance(entry, str) else entry)}
    name = type(model).__name__
    return name in names or name.endswith(("ForCausalLM", "LMHeadModel"))


def check_causal_lm(
    model: torch.nn.Module, spec: str | Path | None = None, need: str = "--context / generate need one"
) -> None:
    """Raise unless `model` is a causal LM (`need` says what needs one)."""
    if not is_causal_lm(model):
        raise FrontendError(f"{model_label(spec, model)} is not a causal language model: {need} (e.g. Llama, GPT-2)")


def example_inputs(model: torch.nn.Module, batch: int, seq_len: int) -> dict[str, torch.Tensor]:
    """Random `input_ids` [batch, seq_len] (seeded), plus an all-ones `attention_mask` for encoders.

    Decoders get no mask: their causal mask then folds to a constant and
    tfm.attention gets `causal = true`.
    """
    check_text_model(model)
    vocab_size = _vocab_size(model)
    assert vocab_size is not None
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab_size, (batch, seq_len), generator=generator)
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
    try:
        result = function(**{name: value for name, value in sizes.items() if name in parameters})
    except FrontendError:
        raise
    except Exception as err:
        raise FrontendError(f"{spec} raised {type(err).__name__}: {_first_line(err)}") from err
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], torch.nn.Module)):
        raise FrontendError(f"'{spec}' must return (torch.nn.Module, example_inputs)")
    model, inputs = result
    return model.eval(), inputs


def import_model(
    model_spec: str, batch: int, seq_len: int, input_shapes: dict[str, tuple[int, ...]] | None = None
) -> ImportedGraph:
    """Load a save_pretrained directory, a .gguf or .onnx file or a "file.py:function" entry and import it to tfm.

    `input_shapes` binds an ONNX graph's dynamic input dimensions. A file is ONNX by its `.onnx` extension
    (any case) or, without a .onnx / .gguf / .py extension, by its content.
    """
    file_name, separator, _ = model_spec.rpartition(":")
    if separator and file_name.endswith(".py"):
        model, inputs = load_python_entry(model_spec, batch, seq_len)
        return import_module(model, inputs, label=model_spec)
    if is_onnx_spec(model_spec):
        from tasic.frontend.onnx_import import import_onnx

        return import_onnx(model_spec, input_shapes)
    model = load_model(model_spec)
    check_text_model(model, model_spec)
    check_positions(model, seq_len, "sequence length", model_spec)
    return import_module(model, example_inputs(model, batch, seq_len), label=model_spec)


def is_onnx_spec(model_spec: str) -> bool:
    """A .onnx path (any case), or an existing regular file of another extension whose content parses as ONNX."""
    path = Path(model_spec)
    if path.suffix.lower() == ".onnx":
        return True
    if is_gguf(path) or path.suffix.lower() == ".py" or not path.is_file():
        return False
    from tasic.frontend.onnx_import import is_onnx_file

    return is_onnx_file(path)
