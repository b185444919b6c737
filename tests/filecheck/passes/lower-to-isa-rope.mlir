// RUN: tasic-opt %s -p lower-to-isa | filecheck %s
// lower-to-isa: tile.rope (the rotary embedding of a tile's first 16 columns, heads of 8) becomes one
// isa.vpu_rope: d = a = the f32 tile at 0, b = the cos rows then the sin rows at 2048.

func.func @main() {
  tile.kernel "qkv:rope" {
    %x = tile.sram {offset = 0 : i64} : memref<16x32xf32, "sram">
    %t = tile.sram {offset = 2048 : i64} : memref<32x8xf32, "sram">
    tile.rope %x, %t, %x {rows = 16 : i64, cols = 32 : i64, head_dim = 8 : i64, roped = 16 : i64} : memref<16x32xf32, "sram">, memref<32x8xf32, "sram">, memref<16x32xf32, "sram">
  }
  func.return
}

// CHECK:      builtin.module {
// CHECK-NEXT: isa.vpu_rope {d_reg = 0 : i64, d_off = 0 : i64, a_reg = 0 : i64, a_off = 0 : i64, b_reg = 0 : i64, b_off = 2048 : i64, rows = 16 : i64, cols = 32 : i64, head_dim = 8 : i64, roped = 16 : i64, dt_d = "f32", dt_a = "f32", dt_b = "f32", loc = "qkv:rope"}
// CHECK-NEXT: isa.halt
