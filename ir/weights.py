"""The weight side table: constant tensors named by `tfm.weight` ops.

Weights never appear in IR text; the IR only carries their names::

    %w = tfm.weight {name = "lm_head.weight"} : tensor<100x32xf32>

and `WeightStore` maps each name to its numpy array.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np


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
