// RUN: tasic-opt %s -p 'double-buffer{target=tiny}' | filecheck %s
// double-buffer: a tile that two loads fill in halves (sram_offset 0 and 16) before anything reads it is
// still written whole by each iteration, so it gets a second copy; a tile only half filled does not.

func.func @main() {
  %x = tile.hbm {name = "x", kind = "input"} : memref<8x16xf32, "hbm">
  %y = tile.hbm {name = "y", kind = "output"} : memref<8x16xf32, "hbm">
  tile.kernel "k" {
    %a = tile.sram {offset = -1 : i64} : memref<2x16xf32, "sram">
    %h = tile.sram {offset = -1 : i64} : memref<2x16xf32, "sram">
    tile.loop 4 : i64 {
      tile.dma_load %x, %a {rows = 1 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [32 : i64], sram_offset = 0 : i64} : memref<8x16xf32, "hbm">, memref<2x16xf32, "sram">
      tile.dma_load %x, %a {rows = 1 : i64, cols = 16 : i64, offset = 16 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [32 : i64], sram_offset = 16 : i64} : memref<8x16xf32, "hbm">, memref<2x16xf32, "sram">
      tile.dma_load %x, %h {rows = 1 : i64, cols = 16 : i64, offset = 16 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [32 : i64], sram_offset = 16 : i64} : memref<8x16xf32, "hbm">, memref<2x16xf32, "sram">
      tile.binary %a, %h, %a {fn = "add", broadcast = "none", rows = 2 : i64, cols = 16 : i64} : memref<2x16xf32, "sram">, memref<2x16xf32, "sram">, memref<2x16xf32, "sram">
      tile.dma_store %a, %y {rows = 2 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [32 : i64], sram_offset = 0 : i64} : memref<2x16xf32, "sram">, memref<8x16xf32, "hbm">
    }
  }
  func.return
}

// CHECK:      %a = tile.sram {offset = -1 : i64} : memref<2x16xf32, "sram">
// CHECK-NEXT: %[[A2:.*]] = tile.sram {offset = -1 : i64} : memref<2x16xf32, "sram">
// CHECK-NEXT: %h = tile.sram
// CHECK-NOT:  tile.sram
// CHECK:      tile.loop 2 : i64 {
// CHECK:        tile.dma_load %x, %[[A2]] {{.*}}sram_offset = 0 : i64
// CHECK-NEXT:   tile.dma_load %x, %[[A2]] {{.*}}sram_offset = 16 : i64
// CHECK-NEXT:   tile.dma_load %x, %h
