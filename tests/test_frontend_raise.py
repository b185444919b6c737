"""The raise-* passes keep numerics: on the filecheck cases and on hand-written torch code.

Each function of tests/filecheck/raise/<pass>.mlir is evaluated with random
inputs and weights (numpy tfm interpreter, tests/conftest.py) before and after
its pass; a torch block written out in primitives is imported, raised and
compared with torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import IntegerType, ModuleOp, TensorType
from xdsl.parser import Parser

from tasic.frontend.torch_import import import_module
from tasic.ir import tfm
from tasic.ir.dialects import tasic_context
from tasic.passes.registry import PASSES

Evaluate = Callable[..., list[np.ndarray]]

RAISE_DIR = Path(__file__).parent / "filecheck" / "raise"
RAISE_PASSES = ["raise-linear", "raise-layer-norm", "raise-rms-norm", "raise-gelu", "raise-attention", "raise-rope"]


def _random(typ: TensorType, rng: np.random.Generator) -> np.ndarray:
    """Random data of a tensor type: small ids for integers, normal values for floats."""
    shape = tuple(typ.get_shape())
    if isinstance(typ.element_type, IntegerType):
        return rng.integers(0, 8, shape)
    return rng.standard_normal(shape).astype(np.float64)


def _apply(pass_name: str, module: ModuleOp) -> None:
    PASSES[pass_name]()().apply(tasic_context(), module)
    module.verify()


@pytest.mark.parametrize("pass_name", RAISE_PASSES)
def test_filecheck_cases_keep_numerics(pass_name: str, tfm_reference: Evaluate) -> None:
    """Every function of the pass's filecheck file computes the same before and after the pass."""
    text = (RAISE_DIR / f"{pass_name}.mlir").read_text()
    before = Parser(tasic_context(), text).parse_module()
    after = before.clone()
    _apply(pass_name, after)
    rng = np.random.default_rng(0)
    for function in (op for op in before.ops if isinstance(op, func.FuncOp)):
        weights = {op.sym.data: _random(op.result.type, rng) for op in function.walk() if isinstance(op, tfm.WeightOp)}
        inputs = [_random(arg.type, rng) for arg in function.args]
        name = function.sym_name.data
        expected = tfm_reference(before, weights, inputs, name)
        actual = tfm_reference(after, weights, inputs, name)
        for got, want in zip(actual, expected, strict=True):
            # A fused op rounds once to its result type: one ulp of bf16 (2^-7) or float32 reassociation.
            rtol = 2.0**-7 if got.dtype.itemsize == 2 else 1e-5
            np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-5, err_msg=f"{pass_name} @{name}")


class _Handwritten(torch.nn.Module):
    """A transformer block written out in primitives, the way older HF models spell it."""

    def __init__(self) -> None:
        super().__init__()
        self.ln_weight = torch.nn.Parameter(torch.randn(32))
        self.ln_bias = torch.nn.Parameter(torch.randn(32))
        self.rms_weight = torch.nn.Parameter(torch.randn(32))
        self.q = torch.nn.Linear(32, 32)
        self.kv = torch.nn.Linear(32, 32)
        self.up = torch.nn.Linear(32, 64)
        self.down = torch.nn.Linear(64, 32)

    def layer_norm(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(-1, keepdim=True)
        s = (x - u).pow(2).mean(-1, keepdim=True)
        return self.ln_weight * ((x - u) / torch.sqrt(s + 1e-12)) + self.ln_bias

    def rms_norm(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        return self.rms_weight * (x * torch.rsqrt(variance + 1e-6))

    def attention(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        q = self.q(x).view(batch, length, 4, 8).transpose(1, 2)
        k, v = self.kv(x).view(batch, length, 4, 8).transpose(1, 2).split(2, dim=1)
        k = k[:, :, None].expand(batch, 2, 2, length, 8).reshape(batch, 4, length, 8)
        v = v[:, :, None].expand(batch, 2, 2, length, 8).reshape(batch, 4, length, 8)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(8) + mask
        out = torch.matmul(torch.softmax(scores, dim=-1), v)
        return out.transpose(1, 2).reshape(batch, length, 32)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.layer_norm(x), mask)
        up = self.up(self.rms_norm(h))
        erf_gelu = up * 0.5 * (1.0 + torch.erf(up / math.sqrt(2.0)))
        tanh_gelu = 0.5 * up * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (up + 0.044715 * torch.pow(up, 3.0))))
        return h + self.down(erf_gelu + tanh_gelu)


def test_handwritten_block_is_raised_and_matches_torch(tfm_reference: Evaluate) -> None:
    """Every raise pass fires on the hand-written block; the result still matches torch."""
    torch.manual_seed(0)
    model = _Handwritten().eval()
    x = torch.randn(2, 8, 32)
    mask = torch.where(torch.rand(2, 1, 8, 8) > 0.3, 0.0, -1e9)
    graph = import_module(model, (x, mask))
    for pass_name in RAISE_PASSES:
        _apply(pass_name, graph.module)
    kinds = [op.name + (f".{op.fn.data}" if hasattr(op, "fn") else "") for op in graph.module.walk()]
    assert kinds.count("tfm.linear") == 4 and kinds.count("tfm.attention") == 1
    assert kinds.count("tfm.layer_norm") == 1 and kinds.count("tfm.rms_norm") == 1
    assert kinds.count("tfm.unary.gelu_erf") == 1 and kinds.count("tfm.unary.gelu_tanh") == 1
    assert not {"tfm.matmul", "tfm.softmax", "tfm.reduce", "tfm.expand"} & set(kinds)
    attention = next(op for op in graph.module.walk() if isinstance(op, tfm.AttentionOp))
    assert tfm.shape_of(attention.key)[1] == 2 and math.isclose(attention.scale.value.data, 1 / math.sqrt(8))
    with torch.no_grad():
        expected = model(x, mask).numpy()
    (actual,) = tfm_reference(graph.module, graph.weights, [x.numpy(), mask.numpy()])
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)
