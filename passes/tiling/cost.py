"""The tile-size cost model: pick matmul tiles by estimated time under the SRAM capacity.

For C[m, n] = A[m, k] @ B[k, n] tiled (tm, tn, tk), the estimate is the larger of
  MXU time: per instruction ceil(folds / arrays) * tk / rate + fill/drain (the simulator's
            SCALE-Sim output-stationary formula, docs/isa.md), over all (m, n, k) tiles;
  DMA time: A is read once per column of output tiles (once when it is a single tile), B once per
            row of output tiles (once when it is a single tile), C written once, at the HBM bandwidth;
plus what double buffering cannot hide (the first step's loads before the first product, except a
weight loaded once, which streams in while the previous kernel computes; the last product after the
last load when DMA is the longer; the last output tile's epilogue and store after its product) and
one DMA latency per output tile (the pipeline refills).
Tiles must fit SRAM with the A and B tiles twice (double buffering) unless loaded once, the output
tiles twice when there are several (the next one's accumulator fills while this one's epilogue
runs), `tile_set_bytes`. Candidates are
the whole dimension, powers of two times the array size and the multiples of the array size that
divide the dimension, so a 2175-row activation is taken whole, a weight is read from HBM once, and
tiles can fill whole rounds of the arrays.
"""

from __future__ import annotations

import math

from tasic.backend.target import Target


def matmul_tile_bytes(tm: int, tn: int, tk: int, element_bytes: int, buffers: int = 1, output_tiles: int = 1) -> int:
    """SRAM bytes of one tile set: A and B (`buffers` copies each), `output_tiles` f32 [tm, tn] tiles
    (the accumulator, and a fused epilogue's operand), a bias row."""
    return buffers * (tm * tk + tk * tn) * element_bytes + output_tiles * tm * tn * 4 + tn * 4


MAX_EXTENT = 32768
"""Largest tile extent considered (instruction fields are 16-bit)."""


def _candidates(size: int, unit: int) -> list[int]:
    """The whole size (if an instruction can take it), unit * 2^i below it, and the multiples of the unit
    that divide the size: no remainder tile, and fold counts that fill whole rounds of the arrays more
    often (Llama-3-70B's gate/up: 3584 columns, 9 x 14 = 126 folds in 4 rounds of 32 arrays, where
    4096 columns take 9 x 16 = 144 folds in 5)."""
    values = {size} if size <= MAX_EXTENT else set()
    step = unit
    while step < min(size, MAX_EXTENT + 1):
        values.add(step)
        step *= 2
    values |= {m for m in range(unit, min(size, MAX_EXTENT) + 1, unit) if size % m == 0}
    return sorted(values)


def estimate_cycles(
    target: Target,
    m: int,
    n: int,
    k: int,
    tiles: tuple[int, int, int],
    eb: int,
    rate: float,
    parts: int = 1,
) -> float:
    """Estimated cycles of the tiled matmul (see the module docstring); with `parts` > 1 each output tile
    is that many instructions side by side (a gated gate/up pair), each paying its own fill and drain."""
    tm, tn, tk = tiles
    mxu = target.mxu
    fill_drain = mxu.rows + mxu.cols - 2
    m_tiles, n_tiles, k_tiles = math.ceil(m / tm), math.ceil(n / tn), math.ceil(k / tk)
    row_parts = [(tm, m // tm), *([(m % tm, 1)] if m % tm else [])]
    col_parts = [(tn, n // tn), *([(n % tn, 1)] if n % tn else [])]
    mxu_cycles = 0.0
    for rows, row_count in row_parts:
        for cols, col_count in col_parts:
            part_cols = math.ceil(cols / parts)
            sequential = math.ceil(math.ceil(rows / mxu.rows) * math.ceil(part_cols / mxu.cols) / mxu.count)
            if mxu.pipelined:
                per_tile = sequential * k / rate + k_tiles * fill_drain
            else:
                per_tile = sequential * (k / rate + k_tiles * fill_drain)
            mxu_cycles += row_count * col_count * per_tile * parts
    a_reads = 1 if m_tiles == 1 and k_tiles == 1 else n_tiles
    b_reads = 1 if n_tiles == 1 and k_tiles == 1 else m_tiles
    moved = (m * k * a_reads + k * n * b_reads) * eb + m * n * 4
    dma_cycles = moved / target.hbm_bytes_per_cycle
    steps = m_tiles * n_tiles * k_tiles
    output_tiles = m_tiles * n_tiles
    # DMA and MXU overlap (double buffering) except for the first step's loads and, when DMA is the
    # longer, the last step's product, which stand alone: fewer, larger tiles expose more of them.
    weight_once = n_tiles == 1 and k_tiles == 1  # B loaded once, before any loop: it streams in early
    first_loads = (tm * tk + (0 if weight_once else tk * tn)) * eb / target.hbm_bytes_per_cycle
    last_product = mxu_cycles / steps if dma_cycles > mxu_cycles else 0.0  # after the last load
    exposed = first_loads + last_product
    # the last output tile's epilogue and store follow its last product (its f32 bytes, as `moved` counts them)
    tail = min(tm, m) * min(tn, n) * 4 / target.hbm_bytes_per_cycle
    return max(mxu_cycles, dma_cycles) + exposed + tail + output_tiles * target.hbm.latency


def tile_set_bytes(m: int, n: int, k: int, tiles: tuple[int, int, int], eb: int, output_tiles: int) -> int:
    """SRAM bytes of a tiling: an operand loaded once (one tile and K step along its dims) needs one copy,
    else two (double buffering); the output tiles need two copies when there are several."""
    tm, tn, tk = tiles
    a_copies = 1 if tm >= m and tk >= k else 2
    b_copies = 1 if tn >= n and tk >= k else 2
    out_copies = 1 if tm >= m and tn >= n else 2
    return (a_copies * tm * tk + b_copies * tk * tn) * eb + out_copies * output_tiles * tm * tn * 4 + tn * 4


_CHOSEN: dict[tuple, tuple[int, int, int] | None] = {}


def best_matmul_tiles(
    target: Target,
    m: int,
    n: int,
    k: int,
    eb: int,
    rate: float,
    budget: int,
    output_tiles: int = 1,
    parts: int = 1,
    full_width: bool = False,
) -> tuple[int, int, int] | None:
    """The cheapest (tm, tn, tk) that fits `budget` bytes double-buffered, or None if none does
    (`parts` as in `estimate_cycles`; `output_tiles` f32 tiles per output tile, `tile_set_bytes`); each
    problem is searched once. With `full_width` every output tile spans all n columns."""
    key = (target.hash, m, n, k, eb, rate, budget, output_tiles, parts, full_width)
    if key not in _CHOSEN:
        best: tuple[float, tuple[int, int, int]] | None = None
        for tm in _candidates(m, target.mxu.rows):
            for tn in [n] if full_width else _candidates(n, target.mxu.cols):
                for tk in _candidates(k, max(target.mxu.rows, target.mxu.cols)):
                    if tile_set_bytes(m, n, k, (tm, tn, tk), eb, output_tiles) > budget:
                        continue
                    cost = estimate_cycles(target, m, n, k, (tm, tn, tk), eb, rate, parts)
                    if best is None or cost < best[0]:
                        best = (cost, (tm, tn, tk))
        _CHOSEN[key] = best[1] if best else None
    return _CHOSEN[key]
