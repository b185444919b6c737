// RUN: tasic-opt %s -p 'plan-sram{target=tiny}' | filecheck %s
// plan-sram places each kernel's tiles 64-byte aligned: the first kernel's from 0, the second's ending at the top of
// the 256 KiB SRAM (so that the two can overlap).

func.func @main() {
  %x = tile.hbm {name = "x", kind = "input"} : memref<4x10xf32, "hbm">
  tile.kernel "k" {
    %a = tile.sram {offset = -1 : i64} : memref<4x10xf32, "sram">
    %b = tile.sram {offset = -1 : i64} : memref<4x1xf32, "sram">
    %c = tile.sram {offset = -1 : i64} : memref<1x10xbf16, "sram">
    tile.dma_load %x, %a {rows = 4 : i64, cols = 10 : i64, offset = 0 : i64, row_stride = 10 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<4x10xf32, "hbm">, memref<4x10xf32, "sram">
  }
  tile.kernel "k2" {
    %d = tile.sram {offset = -1 : i64} : memref<2x2xf32, "sram">
  }
  func.return
}

// CHECK: tile.kernel "k" {
// CHECK-NEXT: tile.sram {offset = 0 : i64} : memref<4x10xf32, "sram">
// CHECK-NEXT: tile.sram {offset = 192 : i64} : memref<4x1xf32, "sram">
// CHECK-NEXT: tile.sram {offset = 256 : i64} : memref<1x10xbf16, "sram">
// CHECK: tile.kernel "k2" {
// CHECK-NEXT: tile.sram {offset = 262080 : i64} : memref<2x2xf32, "sram">
