"""The matmul tile cost model (passes/tiling/cost.py): SRAM accounting and the choices it makes."""

from __future__ import annotations

import math

from tasic.backend.target import load_target
from tasic.passes.tiling.cost import best_matmul_tiles, estimate_cycles, tile_set_bytes

SOHU = load_target("sohu-like")


def test_tile_set_bytes_counts_copies_by_reuse() -> None:
    """Double-buffered A and B and two accumulators in general; one copy of an operand loaded once (one
    tile and K step along its dims) and of the output tiles when there is only one."""
    m, n, k = 100, 64, 32
    several = tile_set_bytes(m, n, k, (50, 32, 16), 1, 1)
    assert several == 2 * (50 * 16 + 16 * 32) + 2 * 50 * 32 * 4 + 32 * 4
    single = tile_set_bytes(m, n, k, (100, 64, 16), 1, 2)  # one output tile with an epilogue operand
    assert single == 2 * (100 * 16 + 16 * 64) + 2 * 100 * 64 * 4 + 64 * 4
    weight_once = tile_set_bytes(m, n, k, (50, 64, 32), 1, 1)  # B whole: loaded once for both row tiles
    assert weight_once == 2 * 50 * 32 + 32 * 64 + 2 * 50 * 64 * 4 + 64 * 4


def test_down_proj_takes_whole_rounds_of_the_arrays() -> None:
    """Llama-3-70B's down_proj at one chip (2175 x 8192 over K = 28672, FP8, a residual operand tile): the
    cost model takes all 8192 columns at once, 9 x 32 = 288 folds, 9 whole rounds of the 32 arrays per K
    step (4096 columns would take 9 x 16 = 144 folds in 5 rounds, one half empty)."""
    m, n, k = 2175, 8192, 28672
    tm, tn, tk = best_matmul_tiles(SOHU, m, n, k, 1, 2.0, SOHU.sram.bytes, 2) or (0, 0, 0)
    folds = math.ceil(tm / 256) * math.ceil(tn / 256)
    assert (tm, tn) == (m, n) and folds % SOHU.mxu.count == 0
    halves = estimate_cycles(SOHU, m, n, k, (m, 4096, tk), 1, 2.0)
    assert estimate_cycles(SOHU, m, n, k, (tm, tn, tk), 1, 2.0) < halves


def test_full_width_tiles_span_every_column() -> None:
    """`full_width` (a rope in the epilogue needs every tile to hold the rotated columns) keeps tn = n."""
    m, n, k = 2175, 10240, 8192
    tiles = best_matmul_tiles(SOHU, m, n, k, 1, 2.0, SOHU.sram.bytes, 1, full_width=True)
    assert tiles is not None and tiles[1] == n
    assert best_matmul_tiles(SOHU, m, n, k, 1, 2.0, 1 << 20, 1, full_width=True) is None  # 1 MiB: nothing fits
