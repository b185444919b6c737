// RUN: tasic-opt %s -p lower-to-isa | filecheck %s
// lower-to-isa: tile.link_send becomes isa.link_send, addressed like a dma_store (the HBM window of the
// output buffer that stands for the next pipeline stage's input), converting f32 to the bf16 it carries.

func.func @main() {
  %y = tile.hbm {name = "hidden_out", kind = "output"} : memref<4x16xbf16, "hbm">
  tile.kernel "pipeline:send0" {
    %a = tile.sram {offset = 256 : i64} : memref<4x16xf32, "sram">
    tile.link_send %a, %y {rows = 4 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<4x16xf32, "sram">, memref<4x16xbf16, "hbm">
  }
  func.return
}

// CHECK:      isa.symbol {name = "hidden_out", kind = "output", address = 0 : i64, shape = [4 : i64, 16 : i64], dtype = "bf16"}
// CHECK-NEXT: isa.addi {rd = 1 : i64, rs = 0 : i64, imm = 0 : i64, loc = "pipeline:send0"}
// CHECK-NEXT: isa.link_send {hbm_reg = 1 : i64, hbm_off = 0 : i64, sram_reg = 0 : i64, sram_off = 256 : i64, rows = 4 : i64, cols = 16 : i64, row_stride = 16 : i64, col_stride = 1 : i64, dt_hbm = "bf16", dt_sram = "f32", loc = "pipeline:send0"}
// CHECK-NEXT: isa.halt
