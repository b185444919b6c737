// RUN: tasic-opt %s -p 'double-buffer{target=tiny}' | filecheck %s
// double-buffer: a loop over output tiles whose body holds a nested K loop is unrolled by two when an MXU
// product in the body starts an accumulator afresh (the first K step, accumulate = 0): the second output
// tile gets its own accumulator and first-step tiles, so its products run while the vector engine applies
// the first tile's epilogue. Tiles the nested loop reads first (its own loads) are shared, and the nested
// loop (already doubled, inner loops first) moves one output tile in its copy as well.

func.func @main() {
  %x = tile.hbm {name = "x", kind = "input"} : memref<4x8xf32, "hbm">
  %w = tile.hbm {name = "w", kind = "weight"} : memref<8x16xf32, "hbm">
  %y = tile.hbm {name = "y", kind = "output"} : memref<4x16xf32, "hbm">
  tile.kernel "fc" {
    %x0 = tile.sram {offset = -1 : i64} : memref<4x2xf32, "sram">
    %w0 = tile.sram {offset = -1 : i64} : memref<2x4xf32, "sram">
    %xk = tile.sram {offset = -1 : i64} : memref<4x2xf32, "sram">
    %wk = tile.sram {offset = -1 : i64} : memref<2x4xf32, "sram">
    %acc = tile.sram {offset = -1 : i64} : memref<4x4xf32, "sram">
    tile.loop 4 : i64 {
      tile.dma_load %x, %x0 {rows = 4 : i64, cols = 2 : i64, offset = 0 : i64, row_stride = 8 : i64, col_stride = 1 : i64, loop_strides = [0 : i64], sram_offset = 0 : i64} : memref<4x8xf32, "hbm">, memref<4x2xf32, "sram">
      tile.dma_load %w, %w0 {rows = 2 : i64, cols = 4 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [4 : i64], sram_offset = 0 : i64} : memref<8x16xf32, "hbm">, memref<2x4xf32, "sram">
      tile.matmul %x0, %w0, %acc {m = 4 : i64, n = 4 : i64, k = 2 : i64, accumulate = 0 : i64, batch = 1 : i64} : memref<4x2xf32, "sram">, memref<2x4xf32, "sram">, memref<4x4xf32, "sram">
      tile.loop 3 : i64 {
        tile.dma_load %x, %xk {rows = 4 : i64, cols = 2 : i64, offset = 2 : i64, row_stride = 8 : i64, col_stride = 1 : i64, loop_strides = [0 : i64, 2 : i64], sram_offset = 0 : i64} : memref<4x8xf32, "hbm">, memref<4x2xf32, "sram">
        tile.dma_load %w, %wk {rows = 2 : i64, cols = 4 : i64, offset = 32 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [4 : i64, 32 : i64], sram_offset = 0 : i64} : memref<8x16xf32, "hbm">, memref<2x4xf32, "sram">
        tile.matmul %xk, %wk, %acc {m = 4 : i64, n = 4 : i64, k = 2 : i64, accumulate = 1 : i64, batch = 1 : i64} : memref<4x2xf32, "sram">, memref<2x4xf32, "sram">, memref<4x4xf32, "sram">
      }
      tile.unary %acc, %acc {fn = "silu", rows = 4 : i64, cols = 4 : i64} : memref<4x4xf32, "sram">, memref<4x4xf32, "sram">
      tile.dma_store %acc, %y {rows = 4 : i64, cols = 4 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [4 : i64], sram_offset = 0 : i64} : memref<4x4xf32, "sram">, memref<4x16xf32, "hbm">
    }
  }
  func.return
}

// The first-step tiles and the accumulator get copies; the nested loop's tiles get theirs from the inner doubling.
// CHECK:      %x0 = tile.sram
// CHECK-NEXT: %[[X0B:.*]] = tile.sram {{.*}} : memref<4x2xf32, "sram">
// CHECK-NEXT: %w0 = tile.sram
// CHECK-NEXT: %[[W0B:.*]] = tile.sram {{.*}} : memref<2x4xf32, "sram">
// CHECK-NEXT: %xk = tile.sram
// CHECK-NEXT: %[[XKB:.*]] = tile.sram {{.*}} : memref<4x2xf32, "sram">
// CHECK-NEXT: %wk = tile.sram
// CHECK-NEXT: %[[WKB:.*]] = tile.sram {{.*}} : memref<2x4xf32, "sram">
// CHECK-NEXT: %acc = tile.sram
// CHECK-NEXT: %[[ACCB:.*]] = tile.sram {{.*}} : memref<4x4xf32, "sram">
// CHECK-NOT:  tile.sram
// Two output tiles per iteration: column strides doubled, the second tile 4 columns on.
// CHECK:      tile.loop 2 : i64 {
// CHECK-NEXT:   tile.dma_load %x, %x0 {{.*}}loop_strides = [0 : i64]
// CHECK-NEXT:   tile.dma_load %w, %w0 {{.*}}offset = 0 : i64{{.*}}loop_strides = [8 : i64]
// CHECK-NEXT:   tile.matmul %x0, %w0, %acc {{.*}}accumulate = 0
// CHECK-NEXT:   tile.loop 1 : i64 {
// CHECK:        tile.matmul %xk, %wk, %acc {{.*}}accumulate = 1
// CHECK:        tile.matmul %[[XKB]], %[[WKB]], %acc {{.*}}accumulate = 1
// CHECK:        }
// CHECK:        tile.matmul %xk, %wk, %acc {{.*}}accumulate = 1
// CHECK-NEXT:   tile.unary %acc, %acc {fn = "silu"
// CHECK-NEXT:   tile.dma_store %acc, %y {{.*}}offset = 0 : i64{{.*}}loop_strides = [8 : i64]
// CHECK-NEXT:   tile.dma_load %x, %[[X0B]]
// CHECK-NEXT:   tile.dma_load %w, %[[W0B]] {{.*}}offset = 4 : i64{{.*}}loop_strides = [8 : i64]
// CHECK-NEXT:   tile.matmul %[[X0B]], %[[W0B]], %[[ACCB]] {{.*}}accumulate = 0
// CHECK-NEXT:   tile.loop 1 : i64 {
// CHECK-NEXT:     tile.dma_load %x, %xk {{.*}}loop_strides = [0 : i64, 4 : i64]
// CHECK-NEXT:     tile.dma_load %w, %wk {{.*}}offset = 36 : i64{{.*}}loop_strides = [8 : i64, 64 : i64]
// CHECK:        tile.unary %[[ACCB]], %[[ACCB]] {fn = "silu"
// CHECK-NEXT:   tile.dma_store %[[ACCB]], %y {{.*}}offset = 4 : i64{{.*}}loop_strides = [8 : i64]
// CHECK-NEXT: }
// CHECK-NOT:  tile.loop
