// RUN: tasic-opt %s -p lower-to-isa | filecheck %s
// lower-to-isa: tile.exp_sum (a softmax's exponentials and their row sums) becomes one isa.vpu_exp_sum:
// d = P in bf16 at 0, a = the f32 scores at 4096, b = the row maxima at 8192, c = the f32 row sums at 8448.

func.func @main() {
  tile.kernel "attn:softmax" {
    %p = tile.sram {offset = 0 : i64} : memref<8x256xbf16, "sram">
    %s = tile.sram {offset = 4096 : i64} : memref<8x256xf32, "sram">
    %m = tile.sram {offset = 8192 : i64} : memref<8x1xf32, "sram">
    %l = tile.sram {offset = 8448 : i64} : memref<8x1xf32, "sram">
    tile.exp_sum %s, %m, %p, %l {rows = 8 : i64, cols = 256 : i64} : memref<8x256xf32, "sram">, memref<8x1xf32, "sram">, memref<8x256xbf16, "sram">, memref<8x1xf32, "sram">
  }
  func.return
}

// CHECK:      builtin.module {
// CHECK-NEXT: isa.vpu_exp_sum {d_reg = 0 : i64, d_off = 0 : i64, a_reg = 0 : i64, a_off = 4096 : i64, b_reg = 0 : i64, b_off = 8192 : i64, c_reg = 0 : i64, c_off = 8448 : i64, rows = 8 : i64, cols = 256 : i64, dt_d = "bf16", dt_a = "f32", dt_b = "f32", loc = "attn:softmax"}
// CHECK-NEXT: isa.halt
