// RUN: tasic-opt %s -p lower-to-isa | filecheck %s
// lower-to-isa: buffers get HBM addresses (weights first), each access an
// address register advanced at the end of the loop body and rewound after it.

func.func @main() {
  %x = tile.hbm {name = "x", kind = "input"} : memref<8x16xf32, "hbm">
  %w = tile.hbm {name = "w", kind = "weight"} : memref<16xf32, "hbm">
  tile.kernel "k" {
    %a = tile.sram {offset = 128 : i64} : memref<2x16xf32, "sram">
    tile.loop 4 : i64 {
      tile.dma_load %x, %a {rows = 2 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [32 : i64], sram_offset = 0 : i64} : memref<8x16xf32, "hbm">, memref<2x16xf32, "sram">
      tile.scalar %a, %a {fn = "mul", value = 0.5 : f64, rows = 2 : i64, cols = 16 : i64} : memref<2x16xf32, "sram">, memref<2x16xf32, "sram">
    }
  }
  func.return
}

// CHECK:      isa.symbol {name = "w", kind = "weight", address = 0 : i64, shape = [16 : i64], dtype = "f32", source = "w"}
// CHECK-NEXT: isa.symbol {name = "x", kind = "input", address = 64 : i64, shape = [8 : i64, 16 : i64], dtype = "f32"}
// CHECK-NEXT: isa.addi {rd = 1 : i64, rs = 0 : i64, imm = 64 : i64, loc = "k"}
// CHECK-NEXT: isa.loop {count = 4 : i64, loc = "k"}
// CHECK-NEXT: isa.dma_load {sram_reg = 0 : i64, sram_off = 128 : i64, hbm_reg = 1 : i64, hbm_off = 0 : i64, rows = 2 : i64, cols = 16 : i64, row_stride = 16 : i64, col_stride = 1 : i64, dt_sram = "f32", dt_hbm = "f32", loc = "k"}
// CHECK-NEXT: isa.vpu_scalar {fn = "mul", {{.*}} value = 5.000000e-01 : f32, loc = "k"}
// CHECK-NEXT: isa.addi {rd = 1 : i64, rs = 1 : i64, imm = 128 : i64, loc = "k"}
// CHECK-NEXT: isa.endloop {loc = "k"}
// CHECK-NEXT: isa.addi {rd = 1 : i64, rs = 1 : i64, imm = -512 : i64, loc = "k"}
// CHECK-NEXT: isa.halt
// CHECK-NOT:  tile.
