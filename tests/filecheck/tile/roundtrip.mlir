// RUN: tasic-opt %s | tasic-opt | filecheck %s
// The tile dialect prints and parses back identically.

func.func @main() {
  %x = tile.hbm {name = "x", kind = "input"} : memref<64x32xf32, "hbm">
  tile.kernel "fc:linear" {
    %a = tile.sram {offset = -1 : i64} : memref<16x32xf32, "sram">
    tile.loop 4 {
      tile.dma_load %x, %a {rows = 16 : i64, cols = 32 : i64, offset = 0 : i64, row_stride = 32 : i64, col_stride = 1 : i64, loop_strides = [512 : i64], sram_offset = 0 : i64} : memref<64x32xf32, "hbm">, memref<16x32xf32, "sram">
      tile.unary %a, %a {fn = "exp", rows = 16 : i64, cols = 32 : i64} : memref<16x32xf32, "sram">, memref<16x32xf32, "sram">
      tile.signal {engine = "mxu", sem = 3 : i64}
    }
    %m = tile.sram {offset = -1 : i64} : memref<16x1xf32, "sram">
    %l = tile.sram {offset = -1 : i64} : memref<16x1xf32, "sram">
    tile.exp_sum %a, %m, %a, %l {rows = 16 : i64, cols = 32 : i64} : memref<16x32xf32, "sram">, memref<16x1xf32, "sram">, memref<16x32xf32, "sram">, memref<16x1xf32, "sram">
    %t = tile.sram {offset = -1 : i64} : memref<32x8xf32, "sram">
    tile.rope %a, %t, %a {rows = 16 : i64, cols = 32 : i64, head_dim = 8 : i64, roped = 16 : i64} : memref<16x32xf32, "sram">, memref<32x8xf32, "sram">, memref<16x32xf32, "sram">
    tile.link_send %a, %x {rows = 16 : i64, cols = 32 : i64, offset = 0 : i64, row_stride = 32 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<16x32xf32, "sram">, memref<64x32xf32, "hbm">
  }
  func.return
}
// CHECK: tile.kernel "fc:linear" {
// CHECK-NEXT: %a = tile.sram {offset = -1 : i64} : memref<16x32xf32, "sram">
// CHECK-NEXT: tile.loop 4 : i64 {
// CHECK-NEXT: tile.dma_load %x, %a {rows = 16 : i64, cols = 32 : i64, offset = 0 : i64, row_stride = 32 : i64, col_stride = 1 : i64, loop_strides = [512 : i64], sram_offset = 0 : i64}
// CHECK: tile.signal {engine = "mxu", sem = 3 : i64}
// CHECK: tile.exp_sum %a, %m, %a, %l {rows = 16 : i64, cols = 32 : i64} : memref<16x32xf32, "sram">, memref<16x1xf32, "sram">, memref<16x32xf32, "sram">, memref<16x1xf32, "sram">
// CHECK: tile.rope %a, %t, %a {rows = 16 : i64, cols = 32 : i64, head_dim = 8 : i64, roped = 16 : i64} : memref<16x32xf32, "sram">, memref<32x8xf32, "sram">, memref<16x32xf32, "sram">
// CHECK: tile.link_send %a, %x {rows = 16 : i64, cols = 32 : i64, offset = 0 : i64, row_stride = 32 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<16x32xf32, "sram">, memref<64x32xf32, "hbm">
