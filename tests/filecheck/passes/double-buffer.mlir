// RUN: tasic-opt %s -p 'double-buffer{target=tiny}' | filecheck %s
// double-buffer: an innermost loop of 5 becomes 2 iterations of two copies (the second copy one
// iteration ahead, strides doubled) plus the fifth iteration after the loop; the tiles each
// iteration writes before reading get a second copy, the accumulator carried across iterations keeps one.

func.func @main() {
  %x = tile.hbm {name = "x", kind = "input"} : memref<10x16xf32, "hbm">
  %y = tile.hbm {name = "y", kind = "output"} : memref<10x16xf32, "hbm">
  tile.kernel "k" {
    %a = tile.sram {offset = -1 : i64} : memref<2x16xf32, "sram">
    %acc = tile.sram {offset = -1 : i64} : memref<2x16xf32, "sram">
    tile.loop 5 : i64 {
      tile.dma_load %x, %a {rows = 2 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [32 : i64], sram_offset = 0 : i64} : memref<10x16xf32, "hbm">, memref<2x16xf32, "sram">
      tile.binary %acc, %a, %acc {fn = "add", broadcast = "none", rows = 2 : i64, cols = 16 : i64} : memref<2x16xf32, "sram">, memref<2x16xf32, "sram">, memref<2x16xf32, "sram">
    }
    tile.dma_store %acc, %y {rows = 2 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<2x16xf32, "sram">, memref<10x16xf32, "hbm">
  }
  func.return
}

// CHECK:      %a = tile.sram {offset = -1 : i64} : memref<2x16xf32, "sram">
// CHECK-NEXT: %[[A2:.*]] = tile.sram {offset = -1 : i64} : memref<2x16xf32, "sram">
// CHECK-NEXT: %acc = tile.sram
// CHECK-NOT:  tile.sram
// CHECK:      tile.loop 2 : i64 {
// CHECK-NEXT:   tile.dma_load %x, %a {{.*}}offset = 0 : i64{{.*}}loop_strides = [64 : i64]
// CHECK-NEXT:   tile.binary %acc, %a, %acc
// CHECK-NEXT:   tile.dma_load %x, %[[A2]] {{.*}}offset = 32 : i64{{.*}}loop_strides = [64 : i64]
// CHECK-NEXT:   tile.binary %acc, %[[A2]], %acc
// CHECK-NEXT: }
// CHECK-NEXT: tile.dma_load %x, %a {{.*}}offset = 128 : i64{{.*}}loop_strides = []
// CHECK-NEXT: tile.binary %acc, %a, %acc
// CHECK-NEXT: tile.dma_store %acc, %y
