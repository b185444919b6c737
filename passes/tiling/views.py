"""Strided views of HBM buffers: how the tile pass makes layout ops free.

A `View` is a window of an HBM buffer: element offset, shape and element
strides, as in torch. Transpose, slice, expand and most reshapes only change
the view; kernels read any view through strided DMA.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from xdsl.ir import SSAValue


def row_major_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Element strides of a dense row-major tensor."""
    strides = []
    step = 1
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


@dataclass(frozen=True)
class View:
    """A strided window of an HBM buffer (offset and strides in elements)."""

    buffer: SSAValue
    offset: int
    shape: tuple[int, ...]
    strides: tuple[int, ...]

    @staticmethod
    def dense(buffer: SSAValue, shape: tuple[int, ...]) -> View:
        """The whole of a dense buffer."""
        return View(buffer, 0, shape, row_major_strides(shape))

    @property
    def is_dense(self) -> bool:
        """Whether the view is the row-major layout of its elements (any offset)."""
        return all(
            stride == expected or size == 1
            for size, stride, expected in zip(self.shape, self.strides, row_major_strides(self.shape), strict=True)
        )

    def permute(self, perm: list[int]) -> View:
        """Dimensions reordered: new dim i is old dim perm[i]."""
        return View(self.buffer, self.offset, tuple(self.shape[p] for p in perm), tuple(self.strides[p] for p in perm))

    def slice(self, dim: int, start: int, end: int, step: int) -> View:
        """Every step-th element of [start, end) along dim."""
        shape, strides = list(self.shape), list(self.strides)
        shape[dim] = len(range(start, end, step))
        strides[dim] *= step
        return View(self.buffer, self.offset + start * self.strides[dim], tuple(shape), tuple(strides))

    def broadcast_to(self, shape: tuple[int, ...]) -> View:
        """numpy broadcasting by zero strides (leading dims added)."""
        extra = len(shape) - len(self.shape)
        old_shape = (1,) * extra + self.shape
        old_strides = (0,) * extra + self.strides
        strides = tuple(0 if o == 1 and n != 1 else s for o, n, s in zip(old_shape, shape, old_strides, strict=True))
        return View(self.buffer, self.offset, tuple(shape), strides)

    def reshape(self, shape: tuple[int, ...]) -> View | None:
        """The same elements with a new shape, or None when strides cannot express it."""
        if prod(shape) != prod(self.shape):
            return None
        if self.is_dense:
            return View(self.buffer, self.offset, tuple(shape), row_major_strides(tuple(shape)))
        return _restride(self, tuple(shape))

    def merge_leading(self, count: int) -> View | None:
        """Merge the first `count`+1 dims into one, or None if strides forbid."""
        return self.reshape((prod(self.shape[: count + 1]), *self.shape[count + 1 :]))


def _restride(view: View, shape: tuple[int, ...]) -> View | None:
    """torch's view rule: split/merge runs of dims that are contiguous with each other."""
    old = [(n, s) for n, s in zip(view.shape, view.strides, strict=True) if n != 1]
    new_strides = [0] * len(shape)
    old_index = 0
    new_index = 0
    while new_index < len(shape):
        if shape[new_index] == 1:
            new_strides[new_index] = 0
            new_index += 1
            continue
        if old_index >= len(old):
            return None
        # take a run of old dims that are mutually contiguous
        run_size, run_stride = old[old_index]
        old_index += 1
        group = [new_index]
        size_new = shape[new_index]
        while size_new != run_size:
            if size_new < run_size:
                new_index += 1
                while new_index < len(shape) and shape[new_index] == 1:
                    new_index += 1
                if new_index >= len(shape):
                    return None
                group.append(new_index)
                size_new *= shape[new_index]
            else:
                if old_index >= len(old) or old[old_index - 1][1] != old[old_index][0] * old[old_index][1]:
                    return None
                run_size *= old[old_index][0]
                run_stride = old[old_index][1]
                old_index += 1
        stride = run_stride
        for index in reversed(group):
            new_strides[index] = stride
            stride *= shape[index]
        new_index += 1
    if old_index != len(old):
        return None
    return View(view.buffer, view.offset, shape, tuple(new_strides))
