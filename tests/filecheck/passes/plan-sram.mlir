// RUN: tasic-opt %s -p 'plan-sram{target=tiny}' | filecheck %s
// plan-sram places each kernel's tiles 64-byte aligned, one after another, at the lowest address the last four
// kernels do not use (so that insert-sync lets them overlap); when SRAM (256 KiB on tiny) is too small for that, it
// avoids fewer of them. A kernel that cannot keep clear of the one before still places the tiles a weight is loaded
// into before any loop on their own, clear of it, so that weight can stream in while that kernel computes.

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
  tile.kernel "k3" {
    %e = tile.sram {offset = -1 : i64} : memref<2x2xf32, "sram">
  }
  tile.kernel "k4" {
    %f = tile.sram {offset = -1 : i64} : memref<2x2xf32, "sram">
  }
  tile.kernel "k5" {
    %g = tile.sram {offset = -1 : i64} : memref<2x2xf32, "sram">
  }
  tile.kernel "k6" {
    %j = tile.sram {offset = -1 : i64} : memref<2x2xf32, "sram">
  }
  tile.kernel "big" {
    %h = tile.sram {offset = -1 : i64} : memref<200x256xf32, "sram">
  }
  tile.kernel "big2" {
    %i = tile.sram {offset = -1 : i64} : memref<200x256xf32, "sram">
  }
  %w = tile.hbm {name = "w", kind = "weight"} : memref<16x256xf32, "hbm">
  tile.kernel "prefetch" {
    %act = tile.sram {offset = -1 : i64} : memref<180x256xf32, "sram">
    %wt = tile.sram {offset = -1 : i64} : memref<16x256xf32, "sram">
    tile.dma_load %w, %wt {rows = 16 : i64, cols = 256 : i64, offset = 0 : i64, row_stride = 256 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<16x256xf32, "hbm">, memref<16x256xf32, "sram">
  }
  func.return
}

// CHECK: tile.kernel "k" {
// CHECK-NEXT: tile.sram {offset = 0 : i64} : memref<4x10xf32, "sram">
// CHECK-NEXT: tile.sram {offset = 192 : i64} : memref<4x1xf32, "sram">
// CHECK-NEXT: tile.sram {offset = 256 : i64} : memref<1x10xbf16, "sram">
// CHECK: tile.kernel "k2" {
// CHECK-NEXT: tile.sram {offset = 320 : i64} : memref<2x2xf32, "sram">
// CHECK: tile.kernel "k3" {
// CHECK-NEXT: tile.sram {offset = 384 : i64} : memref<2x2xf32, "sram">
// CHECK: tile.kernel "k4" {
// CHECK-NEXT: tile.sram {offset = 448 : i64} : memref<2x2xf32, "sram">
// CHECK: tile.kernel "k5" {
// CHECK-NEXT: tile.sram {offset = 512 : i64} : memref<2x2xf32, "sram">
// The first kernel is no longer among the last four: its bytes are free again.
// CHECK: tile.kernel "k6" {
// CHECK-NEXT: tile.sram {offset = 0 : i64} : memref<2x2xf32, "sram">
// CHECK: tile.kernel "big" {
// CHECK-NEXT: tile.sram {offset = 576 : i64} : memref<200x256xf32, "sram">
// Two 200 KiB kernels do not fit side by side: the second cannot avoid the first and starts at 0.
// CHECK: tile.kernel "big2" {
// CHECK-NEXT: tile.sram {offset = 0 : i64} : memref<200x256xf32, "sram">
// Kernel "prefetch" (196 KiB) cannot avoid "big2" (bytes 0 to 204800); its weight tile goes to the highest
// place clear of it (the top of SRAM), the rest at 0.
// CHECK: tile.kernel "prefetch" {
// CHECK-NEXT: tile.sram {offset = 0 : i64} : memref<180x256xf32, "sram">
// CHECK-NEXT: tile.sram {offset = 245760 : i64} : memref<16x256xf32, "sram">
