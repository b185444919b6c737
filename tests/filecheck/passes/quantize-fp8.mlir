// RUN: tasic-opt %s -p quantize-fp8 | filecheck %s
// RUN: tasic-opt %s -p 'quantize-fp8{granularity="row"}' | filecheck %s --check-prefix=ROW
// RUN: echo '{"fc.weight": 3.5, "q.weight": 2.0, "k.weight": 2.0, "wte": 1.0, "one.weight": 8.0}' > %t.json
// RUN: tasic-opt %s -p 'quantize-fp8{calibration="%t.json"}' | filecheck %s --check-prefix=STATIC
// RUN: tasic-opt %s -p 'quantize-fp8,tile{target=tiny}' | filecheck %s --check-prefix=TILE
// RUN: tasic-opt %s | tasic-opt | filecheck %s --check-prefix=ROUNDTRIP
// quantize-fp8: a linear with a weight operand becomes quantize (f8E4M3FN) -> f8 x f8 linear
// accumulating in f32 -> dequantising multiplies; the f8 weight and its per-channel scales are
// derived weights (`name#fp8e4m3`, `name#fp8e4m3_scale`) computed when the binary is written.

// Dynamic per-tensor scale: max |x| over the rows, then over the tensor, floored, / 448.
// CHECK-LABEL: func.func @linear_with_bias
// CHECK:         %[[A:.*]] = tfm.unary %x {loc = "fc:quantize", fn = "abs"} : (tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
// CHECK-NEXT:    %[[R:.*]] = tfm.reduce %[[A]] {loc = "fc:quantize", fn = "max", dims = [2 : i64], keepdim = true} : (tensor<2x8x32xf32>) -> tensor<2x8x1xf32>
// CHECK-NEXT:    %[[M:.*]] = tfm.reduce %[[R]] {loc = "fc:quantize", fn = "max", dims = [0 : i64, 1 : i64, 2 : i64], keepdim = true} : (tensor<2x8x1xf32>) -> tensor<1x1x1xf32>
// CHECK-NEXT:    %[[F:.*]] = tfm.scalar %[[M]] {loc = "fc:quantize", fn = "max", value = 1.000000e-30 : f64}
// CHECK-NEXT:    %[[S:.*]] = tfm.scalar %[[F]] {loc = "fc:quantize", fn = "div", value = 4.480000e+02 : f64} : (tensor<1x1x1xf32>) -> tensor<1x1x1xf32>
// CHECK-NEXT:    %[[Q:.*]] = tfm.quantize %x, %[[S]] {loc = "fc:quantize"} : (tensor<2x8x32xf32>, tensor<1x1x1xf32>) -> tensor<2x8x32xf8E4M3FN>
// CHECK-NEXT:    %[[WQ:.*]] = tfm.weight {name = "fc.weight#fp8e4m3"} : tensor<64x32xf8E4M3FN>
// CHECK-NEXT:    %[[WS:.*]] = tfm.weight {name = "fc.weight#fp8e4m3_scale"} : tensor<64xf32>
// CHECK-NEXT:    %[[Y:.*]] = tfm.linear %[[Q]], %[[WQ]] {loc = "fc"} : (tensor<2x8x32xf8E4M3FN>, tensor<64x32xf8E4M3FN>) -> tensor<2x8x64xf32>
// CHECK-NEXT:    %[[C:.*]] = tfm.binary %[[S]], %[[WS]] {loc = "fc:dequantize", fn = "mul"} : (tensor<1x1x1xf32>, tensor<64xf32>) -> tensor<1x1x64xf32>
// CHECK-NEXT:    %[[Z:.*]] = tfm.binary %[[Y]], %[[C]] {loc = "fc:dequantize", fn = "mul"} : (tensor<2x8x64xf32>, tensor<1x1x64xf32>) -> tensor<2x8x64xf32>
// CHECK-NEXT:    %y = tfm.binary %[[Z]], %b {loc = "fc:bias", fn = "add"} : (tensor<2x8x64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
// CHECK-NEXT:    func.return %y
// CHECK-NOT:     tfm.linear
// Per row (token): one reduce; the output is multiplied by the row scale, then by the weight scale.
// ROW-LABEL: func.func @linear_with_bias
// ROW:         tfm.reduce %{{.*}} {loc = "fc:quantize", fn = "max", dims = [2 : i64], keepdim = true} : (tensor<2x8x32xf32>) -> tensor<2x8x1xf32>
// ROW-NOT:     tfm.reduce
// ROW:         %[[S:.*]] = tfm.scalar %{{.*}} {loc = "fc:quantize", fn = "div", value = 4.480000e+02 : f64} : (tensor<2x8x1xf32>) -> tensor<2x8x1xf32>
// ROW-NEXT:    %[[Q:.*]] = tfm.quantize %x, %[[S]] {loc = "fc:quantize"} : (tensor<2x8x32xf32>, tensor<2x8x1xf32>) -> tensor<2x8x32xf8E4M3FN>
// ROW:         %[[Y:.*]] = tfm.linear %[[Q]]
// ROW-NEXT:    %[[Z:.*]] = tfm.binary %[[Y]], %[[S]] {loc = "fc:dequantize", fn = "mul"} : (tensor<2x8x64xf32>, tensor<2x8x1xf32>) -> tensor<2x8x64xf32>
// ROW-NEXT:    tfm.binary %[[Z]], %{{.*}} {loc = "fc:dequantize", fn = "mul"} : (tensor<2x8x64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
// Static (calibrated) scale 3.5 / 448 = 0.0078125: no run-time statistics; the dequantisation factor
// scale * ws is a derived weight (computed when the constants are written).
// STATIC-LABEL: func.func @linear_with_bias
// STATIC-NOT:     tfm.reduce
// STATIC:         %[[Q:.*]] = tfm.quantize %x {loc = "fc:quantize", static_scale = 7.812500e-03 : f64} : (tensor<2x8x32xf32>) -> tensor<2x8x32xf8E4M3FN>
// STATIC:         %[[F:.*]] = tfm.weight {name = "fc.weight#fp8e4m3_scale#scaled0.0078125"} : tensor<64xf32>
// STATIC:         %[[Y:.*]] = tfm.linear %[[Q]]
// STATIC-NEXT:    %[[Z:.*]] = tfm.binary %[[Y]], %[[F]] {loc = "fc:dequantize", fn = "mul"} : (tensor<2x8x64xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
// STATIC-NEXT:    tfm.binary %[[Z]], %b {loc = "fc:bias", fn = "add"}
// The tile pass: f8 tiles on the MXU, the f8 weight stored transposed, the DMA store saturates and rounds
// to f8 (no clamp on the VPU).
// TILE-LABEL: func.func @linear_with_bias
// TILE-DAG:   %[[QB:.*]] = tile.hbm {name = "t6", kind = "temp"} : memref<2x8x32xf8E4M3FN, "hbm">
// TILE-DAG:   %[[WB:.*]] = tile.hbm {name = "fc.weight#fp8e4m3", kind = "weight", transpose = 1 : i64} : memref<32x64xf8E4M3FN, "hbm">
// TILE-DAG:   tile.hbm {name = "fc.weight#fp8e4m3_scale", kind = "weight"} : memref<64xf32, "hbm">
// TILE:       tile.kernel "fc:quantize" {
// TILE:       tile.binary %[[X:.*]], %{{.*}}, %[[X]] {fn = "div", broadcast = "row"
// TILE-NEXT:  tile.dma_store %[[X]], %[[QB]] {{.*}} : memref<{{[0-9]+}}x{{[0-9]+}}xf32, "sram">, memref<2x8x32xf8E4M3FN, "hbm">
// TILE:       tile.kernel "fc" {
// TILE:       tile.dma_load %[[WB]], {{.*}} : memref<32x64xf8E4M3FN, "hbm">, memref<{{[0-9]+}}x{{[0-9]+}}xf8E4M3FN, "sram">
// TILE:       tile.matmul {{.*}} : memref<{{[0-9x]+}}xf8E4M3FN, "sram">, memref<{{[0-9x]+}}xf8E4M3FN, "sram">, memref<{{[0-9x]+}}xf32, "sram">
// ROUNDTRIP-LABEL: func.func @linear_with_bias
func.func @linear_with_bias(%x: tensor<2x8x32xf32>) -> tensor<2x8x64xf32> attributes {tfm.input_names = ["x"], tfm.output_names = ["y"]} {
  %w = tfm.weight {name = "fc.weight"} : tensor<64x32xf32>
  %b = tfm.weight {name = "fc.bias"} : tensor<64xf32>
  %y = tfm.linear %x, %w, %b {loc = "fc"} : (tensor<2x8x32xf32>, tensor<64x32xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
  func.return %y : tensor<2x8x64xf32>
}

// Linears sharing an input share its quantisation; a tied weight keeps its f32 use (the embedding).
// CHECK-LABEL: func.func @shared_input
// CHECK:         %[[Q:.*]] = tfm.quantize %x, %{{.*}} {loc = "q:quantize"}
// CHECK-NOT:     tfm.quantize
// CHECK:         tfm.linear %[[Q]], %{{.*}} {loc = "q"}
// CHECK:         tfm.linear %[[Q]], %{{.*}} {loc = "k"}
// CHECK:         tfm.embedding %w, %ids
// STATIC-LABEL: func.func @shared_input
// STATIC:         %[[Q:.*]] = tfm.quantize %x {loc = "q:quantize", static_scale = 0.0044642857{{[0-9]*}} : f64}
// STATIC-NOT:     tfm.quantize
// STATIC:         tfm.linear %[[Q]], %{{.*}} {loc = "k"}
func.func @shared_input(%x: tensor<1x4x32xf32>, %ids: tensor<1x4xi64>) -> (tensor<1x4x16xf32>, tensor<1x4x16xf32>, tensor<1x4x32xf32>) {
  %wq = tfm.weight {name = "q.weight"} : tensor<16x32xf32>
  %wk = tfm.weight {name = "k.weight"} : tensor<16x32xf32>
  %w = tfm.weight {name = "wte"} : tensor<50x32xf32>
  %q = tfm.linear %x, %wq {loc = "q"} : (tensor<1x4x32xf32>, tensor<16x32xf32>) -> tensor<1x4x16xf32>
  %k = tfm.linear %x, %wk {loc = "k"} : (tensor<1x4x32xf32>, tensor<16x32xf32>) -> tensor<1x4x16xf32>
  %e = tfm.embedding %w, %ids : (tensor<50x32xf32>, tensor<1x4xi64>) -> tensor<1x4x32xf32>
  func.return %q, %k, %e : tensor<1x4x16xf32>, tensor<1x4x16xf32>, tensor<1x4x32xf32>
}

// One row (a decode step): the per-row maximum is the per-tensor one, so there is one reduce.
// CHECK-LABEL: func.func @one_row
// CHECK:         tfm.reduce %{{.*}} {loc = "one:quantize", fn = "max", dims = [2 : i64], keepdim = true} : (tensor<1x1x32xf32>) -> tensor<1x1x1xf32>
// CHECK-NOT:     tfm.reduce
// CHECK:         tfm.linear
func.func @one_row(%x: tensor<1x1x32xf32>) -> tensor<1x1x8xf32> {
  %w = tfm.weight {name = "one.weight"} : tensor<8x32xf32>
  %y = tfm.linear %x, %w {loc = "one"} : (tensor<1x1x32xf32>, tensor<8x32xf32>) -> tensor<1x1x8xf32>
  func.return %y : tensor<1x1x8xf32>
}

// Not quantised: a weight computed at run time, and a linear that already runs in f8.
// CHECK-LABEL: func.func @not_quantized
// CHECK-NOT:     fn = "abs"
// CHECK:         tfm.linear %x, %v : (tensor<4x32xf32>, tensor<8x32xf32>) -> tensor<4x8xf32>
// CHECK-NEXT:    tfm.quantize %x {static_scale = 2.500000e-01 : f64}
// CHECK-NEXT:    tfm.weight {name = "w#fp8e4m3"}
// CHECK-NEXT:    tfm.linear %q, %wq {loc = "done"}
// CHECK-NEXT:    func.return
// ROUNDTRIP-LABEL: func.func @not_quantized
// ROUNDTRIP:       tfm.quantize %x {static_scale = 2.500000e-01 : f64} : (tensor<4x32xf32>) -> tensor<4x32xf8E4M3FN>
func.func @not_quantized(%x: tensor<4x32xf32>, %v: tensor<8x32xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>) {
  %y = tfm.linear %x, %v : (tensor<4x32xf32>, tensor<8x32xf32>) -> tensor<4x8xf32>
  %q = tfm.quantize %x {static_scale = 0.25 : f64} : (tensor<4x32xf32>) -> tensor<4x32xf8E4M3FN>
  %wq = tfm.weight {name = "w#fp8e4m3"} : tensor<8x32xf8E4M3FN>
  %z = tfm.linear %q, %wq {loc = "done"} : (tensor<4x32xf8E4M3FN>, tensor<8x32xf8E4M3FN>) -> tensor<4x8xf32>
  func.return %y, %z : tensor<4x8xf32>, tensor<4x8xf32>
}
