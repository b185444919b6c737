"""Benchmark: all-MiniLM-L6-v2 compiled for a target and simulated; prints measured figures.

python bench/minilm.py [--target sohu-like] [--dtype bf16] [--batch 8] [--seq-len 128]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from tasic.backend.target import load_target
from tasic.backend.tbin import write_tbin
from tasic.compiler import compile_module
from tasic.frontend.hf import import_model
from tasic.frontend.packages import minilm_dir
from tasic.frontend.sentences import DEMO_SENTENCES, cosine, mean_pool, tokenize, torch_embeddings
from tasic.isa_sim import simulate


def main() -> None:
    """Compile, simulate, print one table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", default="sohu-like")
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args()
    target = load_target(args.target)
    model = minilm_dir()

    start = time.perf_counter()
    graph = import_model(str(model), batch=args.batch, seq_len=args.seq_len)
    imported = time.perf_counter()
    binary = compile_module(graph.module, graph.weights, target, args.dtype)
    compiled = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "minilm.tbin"
        write_tbin(binary, path)
        size = path.stat().st_size

    sentences = [DEMO_SENTENCES[i % len(DEMO_SENTENCES)] for i in range(args.batch)]
    inputs = tokenize(model, sentences, args.seq_len)
    sim_start = time.perf_counter()
    result = simulate(binary, target, inputs)
    sim_wall = time.perf_counter() - sim_start
    timing_start = time.perf_counter()
    timing = simulate(binary, target, timing_only=True).report
    timing_wall = time.perf_counter() - timing_start
    report = result.report
    embeddings = mean_pool(result.outputs["last_hidden_state"], inputs["attention_mask"])
    worst = cosine(embeddings, torch_embeddings(model, inputs)).min()

    tokens = args.batch * args.seq_len
    rows = [
        ("model", f"all-MiniLM-L6-v2, batch {args.batch} x {args.seq_len} tokens, {args.dtype}"),
        ("target", f"{target.name} ({target.description})"),
        ("import wall time", f"{imported - start:.2f} s"),
        ("compile wall time", f"{compiled - imported:.2f} s (passes + encoding)"),
        ("binary size", f"{size:,} bytes ({len(binary.code):,} instructions)"),
        (
            "simulated cycles",
            f"{report.total_cycles:,} = {report.seconds * 1e6:.1f} us at {target.clock_hz / 1e9:.2f} GHz",
        ),
        ("simulated throughput", f"{tokens / report.seconds:,.0f} tokens/s"),
        ("MXU utilisation", f"{report.mxu_utilization * 100:.1f} %"),
        ("simulator wall time", f"{sim_wall:.2f} s functional, {timing_wall:.2f} s timing-only"),
        ("timing-only cycles equal", str(timing.total_cycles == report.total_cycles)),
        ("min cosine vs PyTorch", f"{worst:.6f}"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print()
    print(report.format(top=8))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
