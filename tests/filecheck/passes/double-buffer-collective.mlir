// RUN: tasic-opt %s -p 'double-buffer{target=tiny}' | filecheck %s
// double-buffer around a collective: a row-parallel matmul whose tiles are all-reduced in the loop.
// The second copy's matmul and all-reduce move before the first copy's epilogue and store, so the
// links carry one tile while the engines finish the other. The weight tile, loaded once before the
// loop, keeps one copy.

func.func @main() {
  %x = tile.hbm {name = "x", kind = "input"} : memref<16x16xf32, "hbm">
  %w = tile.hbm {name = "w", kind = "weight"} : memref<16x16xf32, "hbm">
  %y = tile.hbm {name = "y", kind = "output"} : memref<16x16xf32, "hbm">
  tile.kernel "k" {
    %a = tile.sram {offset = -1 : i64} : memref<4x16xf32, "sram">
    %b = tile.sram {offset = -1 : i64} : memref<16x16xf32, "sram">
    %c = tile.sram {offset = -1 : i64} : memref<4x16xf32, "sram">
    tile.dma_load %w, %b {rows = 16 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<16x16xf32, "hbm">, memref<16x16xf32, "sram">
    tile.loop 4 : i64 {
      tile.dma_load %x, %a {rows = 4 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [64 : i64], sram_offset = 0 : i64} : memref<16x16xf32, "hbm">, memref<4x16xf32, "sram">
      tile.matmul %a, %b, %c {m = 4 : i64, n = 16 : i64, k = 16 : i64, accumulate = 0 : i64} : memref<4x16xf32, "sram">, memref<16x16xf32, "sram">, memref<4x16xf32, "sram">
      tile.all_reduce %c, %c {chips = 2 : i64, rows = 4 : i64, cols = 16 : i64} : memref<4x16xf32, "sram">, memref<4x16xf32, "sram">
      tile.unary %c, %c {fn = "exp", rows = 4 : i64, cols = 16 : i64} : memref<4x16xf32, "sram">, memref<4x16xf32, "sram">
      tile.dma_store %c, %y {rows = 4 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [64 : i64], sram_offset = 0 : i64} : memref<4x16xf32, "sram">, memref<16x16xf32, "hbm">
    }
  }
  func.return
}

// CHECK:      %a = tile.sram
// CHECK-NEXT: %[[A2:.*]] = tile.sram
// CHECK-NEXT: %b = tile.sram
// CHECK-NEXT: %c = tile.sram
// CHECK-NEXT: %[[C2:.*]] = tile.sram
// CHECK-NOT:  tile.sram
// CHECK:      tile.loop 2 : i64 {
// CHECK-NEXT:   tile.dma_load %x, %a {{.*}}offset = 0 : i64{{.*}}loop_strides = [128 : i64]
// CHECK-NEXT:   tile.matmul %a, %b, %c
// CHECK-NEXT:   tile.all_reduce %c, %c
// CHECK-NEXT:   tile.dma_load %x, %[[A2]] {{.*}}offset = 64 : i64{{.*}}loop_strides = [128 : i64]
// CHECK-NEXT:   tile.matmul %[[A2]], %b, %[[C2]]
// CHECK-NEXT:   tile.all_reduce %[[C2]], %[[C2]]
// CHECK-NEXT:   tile.unary %c, %c {fn = "exp"
// CHECK-NEXT:   tile.dma_store %c, %y {{.*}}offset = 0 : i64
// CHECK-NEXT:   tile.unary %[[C2]], %[[C2]] {fn = "exp"
// CHECK-NEXT:   tile.dma_store %[[C2]], %y {{.*}}offset = 64 : i64
// CHECK-NEXT: }
