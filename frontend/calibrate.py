"""FP8 calibration: the largest |input| each linear layer sees on sample inputs (static activation scales).

    amax = calibrate_linears(model, lambda: model(input_ids))     # any torch module with nn.Linear layers
    amax = calibrate_llm("model.gguf", ["Hello", "Write a poem"], chat=True)
    write_calibration(amax, "scales.json")   # then: quantize-fp8{calibration="scales.json"}

Keys are the weight names the importer gives the linears' `tfm.weight` ops
(parameter names, the first name of a tied weight), values are max |x| over
every element of every call; the pass turns each into a scale max / 448.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from tasic.frontend.errors import FrontendError
from tasic.frontend.hf import check_causal_lm, load_model, load_tokenizer


def calibrate_linears(model: torch.nn.Module, run: Callable[[], Any]) -> dict[str, float]:
    """Call `run()` (which runs `model` on the sample inputs) and return weight name -> max |input| per linear."""
    names: dict[int, str] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), name)
    amax: dict[str, float] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(_module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            value = float(inputs[0].detach().abs().max())
            amax[name] = max(amax.get(name, 0.0), value)

        return hook

    handles = [
        module.register_forward_pre_hook(record(names[id(module.weight)]))
        for module in model.modules()
        if isinstance(module, torch.nn.Linear)
    ]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return amax


def calibrate_llm(model: str | Path, prompts: Sequence[str], chat: bool = False) -> dict[str, float]:
    """Max |input| per linear of a causal LM (HF directory or .gguf) over `prompts`, each run unpadded."""
    if not prompts:
        raise FrontendError("calibration needs at least one sample prompt")
    network = load_model(model)
    check_causal_lm(network, model, "calibration needs one")
    tokenizer = load_tokenizer(model)
    if tokenizer is None:
        raise FrontendError(f"no tokenizer found for {model}: calibration needs one to encode the prompts")
    encoded = []
    for prompt in prompts:
        if chat:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
            encoded.append(tokenizer.encode(text, add_special_tokens=False))
        else:
            encoded.append(tokenizer.encode(prompt))

    def run() -> None:
        for ids in encoded:
            network(input_ids=torch.tensor([ids]))

    return calibrate_linears(network, run)


def write_calibration(amax: dict[str, float], path: str | Path) -> None:
    """Store a calibration as the JSON object quantize-fp8 reads (a layer that only saw zeros gets 1e-30)."""
    Path(path).write_text(json.dumps({name: max(value, 1e-30) for name, value in amax.items()}, indent=1) + "\n")
