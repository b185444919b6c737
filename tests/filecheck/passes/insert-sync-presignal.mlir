// RUN: tasic-opt %s -p insert-sync | filecheck %s
// insert-sync: a loop's carried token is pre-signalled as early in its kernel as the producer allows. Here the MXU
// signals before the first K step's matmul (in tiles of its own, which no load of the loop touches), not after it,
// so the loop's first load of %a does not wait for that matmul.

func.func @main() {
  %x = tile.hbm {name = "x", kind = "input"} : memref<4x64xf32, "hbm">
  %w = tile.hbm {name = "w", kind = "weight"} : memref<16x16xf32, "hbm">
  %y = tile.hbm {name = "y", kind = "output"} : memref<4x16xf32, "hbm">
  tile.kernel "k" {
    %a0 = tile.sram {offset = 0 : i64} : memref<4x16xf32, "sram">
    %a = tile.sram {offset = 256 : i64} : memref<4x16xf32, "sram">
    %wt = tile.sram {offset = 512 : i64} : memref<16x16xf32, "sram">
    %acc = tile.sram {offset = 1536 : i64} : memref<4x16xf32, "sram">
    tile.dma_load %w, %wt {rows = 16 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<16x16xf32, "hbm">, memref<16x16xf32, "sram">
    tile.dma_load %x, %a0 {rows = 4 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 64 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<4x64xf32, "hbm">, memref<4x16xf32, "sram">
    tile.matmul %a0, %wt, %acc {m = 4 : i64, n = 16 : i64, k = 16 : i64, accumulate = 0 : i64} : memref<4x16xf32, "sram">, memref<16x16xf32, "sram">, memref<4x16xf32, "sram">
    tile.loop 3 : i64 {
      tile.dma_load %x, %a {rows = 4 : i64, cols = 16 : i64, offset = 16 : i64, row_stride = 64 : i64, col_stride = 1 : i64, loop_strides = [16 : i64], sram_offset = 0 : i64} : memref<4x64xf32, "hbm">, memref<4x16xf32, "sram">
      tile.matmul %a, %wt, %acc {m = 4 : i64, n = 16 : i64, k = 16 : i64, accumulate = 1 : i64} : memref<4x16xf32, "sram">, memref<16x16xf32, "sram">, memref<4x16xf32, "sram">
    }
    tile.dma_store %acc, %y {rows = 4 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<4x16xf32, "sram">, memref<4x16xf32, "hbm">
  }
  func.return
}

// CHECK:      tile.kernel "k" {
// CHECK:      %acc = tile.sram
// CHECK-NEXT: tile.signal {engine = "mxu", sem = [[PRE:[0-9]+]] : i64}
// CHECK-NEXT: tile.dma_load %w, %wt
// CHECK-NEXT: tile.dma_load %x, %a0
// CHECK:      tile.matmul %a0, %wt, %acc
// CHECK-NEXT: tile.loop 3 : i64 {
// CHECK-NEXT:   tile.wait {engine = "dma_load", sem = [[PRE]] : i64}
// CHECK-NEXT:   tile.dma_load %x, %a
// CHECK:        tile.matmul %a, %wt, %acc
// CHECK-NEXT:   tile.signal {engine = "mxu", sem = [[PRE]] : i64}
// CHECK-NEXT: }
// CHECK:      tile.wait {engine = "dma_load", sem = [[PRE]] : i64}
