// RUN: tasic-opt %s | tasic-opt | filecheck %s
// The isa dialect prints and parses back identically.

isa.symbol {name = "x", kind = "input", address = 0 : i64, shape = [8 : i64, 32 : i64], dtype = "f32"}
isa.addi {rd = 1 : i64, rs = 0 : i64, imm = 0 : i64}
isa.loop {count = 4 : i64}
isa.dma_load {sram_reg = 0 : i64, sram_off = 0 : i64, hbm_reg = 1 : i64, hbm_off = 0 : i64, rows = 2 : i64, cols = 32 : i64, row_stride = 32 : i64, col_stride = 1 : i64, dt_sram = "f32", dt_hbm = "f32"}
isa.vpu_scalar {fn = "mul", d_reg = 0 : i64, d_off = 0 : i64, a_reg = 0 : i64, a_off = 0 : i64, rows = 2 : i64, cols = 32 : i64, dt_d = "f32", dt_a = "f32", value = 0.125 : f32, loc = "a:b"}
isa.endloop
isa.vpu_rope {d_reg = 0 : i64, d_off = 0 : i64, a_reg = 0 : i64, a_off = 0 : i64, b_reg = 0 : i64, b_off = 512 : i64, rows = 2 : i64, cols = 32 : i64, head_dim = 8 : i64, roped = 16 : i64, dt_d = "f32", dt_a = "f32", dt_b = "f32"}
isa.link_send {hbm_reg = 1 : i64, hbm_off = 64 : i64, sram_reg = 0 : i64, sram_off = 256 : i64, rows = 2 : i64, cols = 32 : i64, row_stride = 32 : i64, col_stride = 1 : i64, dt_hbm = "bf16", dt_sram = "f32"}
isa.halt
// CHECK: isa.symbol {name = "x", kind = "input", address = 0 : i64, shape = [8 : i64, 32 : i64], dtype = "f32"}
// CHECK-NEXT: isa.addi {rd = 1 : i64, rs = 0 : i64, imm = 0 : i64}
// CHECK-NEXT: isa.loop {count = 4 : i64}
// CHECK: value = 1.250000e-01 : f32, loc = "a:b"}
// CHECK-NEXT: isa.endloop
// CHECK-NEXT: isa.vpu_rope {d_reg = 0 : i64, d_off = 0 : i64, a_reg = 0 : i64, a_off = 0 : i64, b_reg = 0 : i64, b_off = 512 : i64, rows = 2 : i64, cols = 32 : i64, head_dim = 8 : i64, roped = 16 : i64, dt_d = "f32", dt_a = "f32", dt_b = "f32"}
// CHECK-NEXT: isa.link_send {hbm_reg = 1 : i64, hbm_off = 64 : i64, sram_reg = 0 : i64, sram_off = 256 : i64, rows = 2 : i64, cols = 32 : i64, row_stride = 32 : i64, col_stride = 1 : i64, dt_hbm = "bf16", dt_sram = "f32"}
// CHECK-NEXT: isa.halt
