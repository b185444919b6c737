// RUN: tasic-opt %s -p 'tile{target=tiny dtype=bf16}' | filecheck %s
// tile: a linear with one output tile (all 12 rows and 16 columns) whose result, after the residual add, feeds
// an rms_norm: the norm runs on the accumulator in the same kernel, in place once the sum is stored, so
// there is no norm kernel and no second tile of the output's size. The bf16 residual is loaded as bf16
// (the vector engine reads it widened), half the SRAM of an f32 copy.

func.func @main(%x: tensor<12x48xbf16>, %r: tensor<12x16xbf16>) -> (tensor<12x16xbf16>, tensor<12x16xbf16>) attributes {tfm.input_names = ["x", "residual"], tfm.output_names = ["h", "normed"]} {
  %w = tfm.weight {name = "down.weight"} : tensor<16x48xbf16>
  %g = tfm.weight {name = "norm.weight"} : tensor<16xbf16>
  %y = tfm.linear %x, %w {loc = "down"} : (tensor<12x48xbf16>, tensor<16x48xbf16>) -> tensor<12x16xbf16>
  %h = tfm.binary %y, %r {fn = "add"} : (tensor<12x16xbf16>, tensor<12x16xbf16>) -> tensor<12x16xbf16>
  %n = tfm.rms_norm %h, %g {loc = "norm", eps = 1.000000e-05 : f64} : (tensor<12x16xbf16>, tensor<16xbf16>) -> tensor<12x16xbf16>
  func.return %h, %n : tensor<12x16xbf16>, tensor<12x16xbf16>
}

// CHECK:      tile.kernel "down" {
// CHECK-NEXT: %[[A:.*]] = tile.sram {offset = -1 : i64} : memref<12x48xbf16, "sram">
// CHECK-NEXT: %[[W:.*]] = tile.sram {offset = -1 : i64} : memref<48x16xbf16, "sram">
// CHECK-NEXT: %[[ACC:.*]] = tile.sram {offset = -1 : i64} : memref<12x16xf32, "sram">
// CHECK-NEXT: %[[RES:.*]] = tile.sram {offset = -1 : i64} : memref<12x16xbf16, "sram">
// CHECK-NEXT: %[[STAT:.*]] = tile.sram {offset = -1 : i64} : memref<12x1xf32, "sram">
// CHECK-NEXT: %[[GAMMA:.*]] = tile.sram {offset = -1 : i64} : memref<1x16xf32, "sram">
// CHECK-NOT:  tile.sram
// CHECK:      tile.matmul %[[A]], %[[W]], %[[ACC]] {m = 12 : i64, n = 16 : i64, k = 48 : i64, accumulate = 0 : i64}
// CHECK-NEXT: tile.dma_load %{{.*}}, %[[RES]]
// CHECK-NEXT: tile.binary %[[ACC]], %[[RES]], %[[ACC]] {fn = "add", broadcast = "none", rows = 12 : i64, cols = 16 : i64}
// CHECK-NEXT: tile.dma_store %[[ACC]], %[[H:[0-9]+]]
// CHECK-NEXT: tile.reduce %[[ACC]], %[[STAT]] {fn = "sumsq", rows = 12 : i64, cols = 16 : i64}
// CHECK:      tile.unary %[[STAT]], %[[STAT]] {fn = "rsqrt", rows = 12 : i64, cols = 1 : i64}
// CHECK-NEXT: tile.binary %[[ACC]], %[[STAT]], %[[ACC]] {fn = "mul", broadcast = "row", rows = 12 : i64, cols = 16 : i64}
// CHECK-NEXT: tile.binary %[[ACC]], %[[GAMMA]], %[[ACC]] {fn = "mul", broadcast = "col", rows = 12 : i64, cols = 16 : i64}
// CHECK-NEXT: tile.dma_store %[[ACC]], %[[N:[0-9]+]]
// CHECK-NEXT: }
// CHECK-NOT:  tile.kernel
