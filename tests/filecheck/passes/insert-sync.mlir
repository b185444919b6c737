// RUN: tasic-opt %s -p insert-sync | filecheck %s
// insert-sync: a token from the loading DMA to the VPU inside the loop, a
// loop-carried token from the store back to the next iteration's load
// (pre-signalled before the loop, drained after it).

func.func @main() {
  %x = tile.hbm {name = "x", kind = "input"} : memref<8x16xf32, "hbm">
  %y = tile.hbm {name = "y", kind = "output"} : memref<8x16xf32, "hbm">
  tile.kernel "k" {
    %a = tile.sram {offset = 0 : i64} : memref<2x16xf32, "sram">
    tile.loop 4 : i64 {
      tile.dma_load %x, %a {rows = 2 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [32 : i64], sram_offset = 0 : i64} : memref<8x16xf32, "hbm">, memref<2x16xf32, "sram">
      tile.unary %a, %a {fn = "exp", rows = 2 : i64, cols = 16 : i64} : memref<2x16xf32, "sram">, memref<2x16xf32, "sram">
      tile.dma_store %a, %y {rows = 2 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [32 : i64], sram_offset = 0 : i64} : memref<2x16xf32, "sram">, memref<8x16xf32, "hbm">
    }
  }
  func.return
}

// CHECK:      tile.signal {engine = "dma_store", sem = [[CARRY:[0-9]+]] : i64}
// CHECK:      tile.loop 4 : i64 {
// CHECK:      tile.wait {engine = "dma_load", sem = [[CARRY]] : i64}
// CHECK:      tile.dma_load
// CHECK:      tile.signal {engine = "dma_load", sem = 2 : i64}
// CHECK:      tile.wait {engine = "vpu", sem = 2 : i64}
// CHECK:      tile.unary
// CHECK:      tile.signal {engine = "vpu", sem = 10 : i64}
// CHECK:      tile.wait {engine = "dma_store", sem = 10 : i64}
// CHECK:      tile.dma_store
// CHECK:      tile.signal {engine = "dma_store", sem = [[CARRY]] : i64}
// CHECK:      }
// CHECK:      tile.wait {engine = "dma_load", sem = [[CARRY]] : i64}
