"""The weight side table: constant tensors named by `tfm.weight` ops.

Weights never appear in IR text; the IR only carries their names::

    %w = tfm.weight {name = "lm_head.weight"} : tensor<100x32xf32>

and `WeightStore` maps each name to its numpy array.

A name `<base>#<derivation>` names a tensor computed from the weight `<base>`
at compile time (`DERIVATIONS`); `resolve_weights` computes it when the
backend lays out the constants, so compile-time transforms such as FP8
quantisation (passes/quantize_fp8.py) stay out of the IR text::

    %wq = tfm.weight {name = "fc.weight#fp8e4m3"} : tensor<64x32xf8E4M3FN>
    %ws = tfm.weight {name = "fc.weight#fp8e4m3_scale"} : tensor<64xf32>

`<base>#scaled<x>` is the weight times the float32 constant x (static FP8
dequantisation factors). `<a>|<b>|...#cat<P>` concatenates weights along dim 0 (fused linears,
passes/fuse_linears.py), interleaved in P blocks so that part c of P equal
parts is [a_c, b_c, ...] (tensor parallelism splits the fused weight the way
it split each one); derivations nest, e.g. `q.weight|k.weight#cat8#fp8e4m3`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import ml_dtypes
import numpy as np

FP8_E4M3_MAX = 448.0
"""Largest finite float8_e4m3fn value; quantisation saturates to +-FP8_E4M3_MAX."""


class WeightStore(Mapping[str, np.ndarray]):
    """Named numpy arrays, one per distinct `tfm.weight` name (a read-only mapping plus `add`)."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def add(self, name_hint: str, array: np.ndarray) -> str:
        """Store `array` under `name_hint`, or `name_hint_1`, `_2`... when taken; return the name used."""
        name, suffix = name_hint, 0
        while name in self._arrays:
            suffix += 1
            name = f"{name_hint}_{suffix}"
        self._arrays[name] = array
        return name

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def __len__(self) -> int:
        return len(self._arrays)

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    @property
    def names(self) -> list[str]:
        """Weight names in insertion order."""
        return list(self._arrays)

    @property
    def total_bytes(self) -> int:
        """Bytes taken by all arrays."""
        return sum(array.nbytes for array in self._arrays.values())


def quantize_fp8_per_channel(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel FP8 E4M3 quantisation of a torch-layout `[out, in]` weight.

    scale[o] = max_i |w[o, i]| / 448 in float32 (1 for an all-zero row) and
    q[o, i] = round_to_nearest_even(clip(w[o, i] / scale[o], -448, 448)) as float8_e4m3fn,
    so that w ~ q * scale[:, None]. Returns (q, scale).
    """
    w = np.asarray(weight, np.float32)
    if w.ndim != 2:
        raise ValueError(f"per-channel FP8 quantisation needs a 2-D [out, in] weight, not shape {w.shape}")
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / np.float32(FP8_E4M3_MAX), np.float32(1)).astype(np.float32)
    q = np.clip(w / scale[:, None], -FP8_E4M3_MAX, FP8_E4M3_MAX).astype(ml_dtypes.float8_e4m3fn)
    return q, scale


DERIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "fp8e4m3": lambda w: quantize_fp8_per_channel(w)[0],
    "fp8e4m3_scale": lambda w: quantize_fp8_per_channel(w)[1],
}
"""Derived weights by suffix: `<base>#<suffix>` is `DERIVATIONS[suffix](weights[<base>])`."""


def concatenate_blocks(arrays: list[np.ndarray], parts: int) -> np.ndarray:
    """`arrays` concatenated along dim 0 as `parts` blocks: part c (of equal parts) is [a_c, b_c, ...]."""
    for array in arrays:
        if array.shape[0] % parts:
            raise ValueError(f"cannot split dim 0 of shape {array.shape} into {parts} parts")
    blocks = [np.split(np.asarray(a), parts) for a in arrays]
    return np.concatenate([block for c in range(parts) for block in (b[c] for b in blocks)])


def concatenated_name(bases: list[str], parts: int = 1) -> str:
    """The weight name of `bases` concatenated along dim 0 in `parts` interleaved blocks."""
    return f"{'|'.join(bases)}#cat{parts}"


def scaled_name(base: str, factor: float) -> str:
    """The weight name of `base` times the constant `factor` (exactly representable in the name)."""
    return f"{base}#scaled{float(factor)!r}"


def _scale_factor(derivation: str) -> float | None:
    text = derivation.removeprefix("scaled")
    if not derivation.startswith("scaled"):
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _concatenation_parts(derivation: str) -> int | None:
    digits = derivation.removeprefix("cat")
    return int(digits) if derivation.startswith("cat") and digits.isdigit() and int(digits) >= 1 else None


def derived_name(base: str, derivation: str) -> str:
    """The weight name of `derivation` applied to the weight `base`."""
    if derivation not in DERIVATIONS:
        raise KeyError(f"unknown weight derivation '{derivation}' (known: {', '.join(DERIVATIONS)})")
    return f"{base}#{derivation}"


def split_derived(name: str) -> tuple[str, str] | None:
    """(base, derivation) of a derived weight name, or None for a stored weight."""
    base, sep, derivation = name.rpartition("#")
    known = derivation in DERIVATIONS or _concatenation_parts(derivation) is not None or _scale_factor(derivation)
    return (base, derivation) if sep and known else None


class ResolvedWeights(Mapping[str, np.ndarray]):
    """The stored weights plus, on demand, every derived weight name (computed when looked up, not kept)."""

    def __init__(self, stored: Mapping[str, np.ndarray]) -> None:
        self.stored = stored

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self.stored:
            return self.stored[name]
        derived = split_derived(name)
        if derived is None:
            raise KeyError(name)
        base, derivation = derived
        parts = _concatenation_parts(derivation)
        if parts is not None:
            return concatenate_blocks([np.asarray(self[b]) for b in base.split("|")], parts)
        factor = _scale_factor(derivation)
        if factor is not None:
            array = np.asarray(self[base])
            return (array * array.dtype.type(factor)).astype(array.dtype)
        return DERIVATIONS[derivation](np.asarray(self[base]))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name in self.stored:
            return True
        derived = split_derived(name)
        if derived is None:
            return False
        base, derivation = derived
        bases = base.split("|") if _concatenation_parts(derivation) is not None else [base]
        return all(b in self for b in bases)

    def __len__(self) -> int:
        return len(self.stored)

    def __iter__(self) -> Iterator[str]:
        return iter(self.stored)


def resolve_weights(weights: Mapping[str, np.ndarray] | None) -> Mapping[str, np.ndarray] | None:
    """`weights` with derived names resolvable (None stays None: a timing-only binary)."""
    if weights is None or isinstance(weights, ResolvedWeights):
        return weights
    return ResolvedWeights(weights)
