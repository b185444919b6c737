// RUN: tasic-opt %s -p lower-to-isa | filecheck %s
// lower-to-isa: the registers of one top-level loop nest are set just before it and free after it, so the
// next nest reuses their numbers (a kernel of many small loops stays within the 31 address registers).

func.func @main() {
  %x = tile.hbm {name = "x", kind = "input"} : memref<8x16xf32, "hbm">
  %y = tile.hbm {name = "y", kind = "input"} : memref<8x16xf32, "hbm">
  tile.kernel "k" {
    %a = tile.sram {offset = 128 : i64} : memref<2x16xf32, "sram">
    tile.loop 4 : i64 {
      tile.dma_load %x, %a {rows = 2 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [32 : i64], sram_offset = 0 : i64} : memref<8x16xf32, "hbm">, memref<2x16xf32, "sram">
    }
    tile.loop 2 : i64 {
      tile.dma_load %y, %a {rows = 2 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [64 : i64], sram_offset = 0 : i64} : memref<8x16xf32, "hbm">, memref<2x16xf32, "sram">
    }
  }
  func.return
}

// CHECK:      isa.symbol {name = "x", {{.*}}address = 0 : i64
// CHECK-NEXT: isa.symbol {name = "y", {{.*}}address = 512 : i64
// CHECK-NEXT: isa.addi {rd = 1 : i64, rs = 0 : i64, imm = 0 : i64, loc = "k"}
// CHECK-NEXT: isa.loop {count = 4 : i64, loc = "k"}
// CHECK-NEXT: isa.dma_load {sram_reg = 0 : i64, sram_off = 128 : i64, hbm_reg = 1 : i64
// CHECK-NEXT: isa.addi {rd = 1 : i64, rs = 1 : i64, imm = 128 : i64, loc = "k"}
// CHECK-NEXT: isa.endloop
// CHECK-NEXT: isa.addi {rd = 1 : i64, rs = 1 : i64, imm = -512 : i64, loc = "k"}
// CHECK-NEXT: isa.addi {rd = 1 : i64, rs = 0 : i64, imm = 512 : i64, loc = "k"}
// CHECK-NEXT: isa.loop {count = 2 : i64, loc = "k"}
// CHECK-NEXT: isa.dma_load {sram_reg = 0 : i64, sram_off = 128 : i64, hbm_reg = 1 : i64
// CHECK-NEXT: isa.addi {rd = 1 : i64, rs = 1 : i64, imm = 256 : i64, loc = "k"}
