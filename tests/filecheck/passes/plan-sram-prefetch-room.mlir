// RUN: tasic-opt %s -p 'plan-sram{target=tiny}' | filecheck %s
// plan-sram: a kernel that cannot keep clear of the kernels before it places its weight's prefetch tile
// clear of the previous kernel at the highest spot that leaves the rest of the kernel room. Here (256 KiB
// of SRAM) "mid" holds the top 56 KiB; just below it (120 KiB) the 80 KiB weight tile would leave 120 KiB
// and 56 KiB on either side, too little for the 130 KiB activation, so the weight goes to 0 and the rest
// after it (over "low", which it then waits for).

func.func @main() {
  %w = tile.hbm {name = "w", kind = "weight"} : memref<80x256xf32, "hbm">
  tile.kernel "low" {
    %a = tile.sram {offset = -1 : i64} : memref<200x256xf32, "sram">
  }
  tile.kernel "mid" {
    %b = tile.sram {offset = -1 : i64} : memref<56x256xf32, "sram">
  }
  tile.kernel "pf" {
    %act = tile.sram {offset = -1 : i64} : memref<130x256xf32, "sram">
    %wt = tile.sram {offset = -1 : i64} : memref<80x256xf32, "sram">
    tile.dma_load %w, %wt {rows = 80 : i64, cols = 256 : i64, offset = 0 : i64, row_stride = 256 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<80x256xf32, "hbm">, memref<80x256xf32, "sram">
  }
  func.return
}

// CHECK: tile.kernel "low" {
// CHECK-NEXT: tile.sram {offset = 0 : i64} : memref<200x256xf32, "sram">
// CHECK: tile.kernel "mid" {
// CHECK-NEXT: tile.sram {offset = 204800 : i64} : memref<56x256xf32, "sram">
// CHECK: tile.kernel "pf" {
// CHECK-NEXT: tile.sram {offset = 81920 : i64} : memref<130x256xf32, "sram">
// CHECK-NEXT: tile.sram {offset = 0 : i64} : memref<80x256xf32, "sram">
