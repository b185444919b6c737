// RUN: tasic-opt %s | tasic-opt | filecheck %s
// The tfm dialect prints and parses back identically.

// CHECK-LABEL: func.func @main
func.func @main(%x: tensor<2x8x32xf32>) -> tensor<2x8x64xf32> {
  %w = tfm.weight {name = "fc.weight"} : tensor<64x32xf32>
  %b = tfm.weight {name = "fc.bias"} : tensor<64xf32>
  // CHECK: tfm.linear %x, %w, %b {loc = "fc"}
  %y = tfm.linear %x, %w, %b {loc = "fc"} : (tensor<2x8x32xf32>, tensor<64x32xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
  %y2 = tfm.linear %x, %w : (tensor<2x8x32xf32>, tensor<64x32xf32>) -> tensor<2x8x64xf32>
  %z = tfm.scalar %y {fn = "mul", value = 0.5 : f64} : (tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  %t = tfm.transpose %z {perm = [0, 2, 1]} : (tensor<2x8x64xf32>) -> tensor<2x64x8xf32>
  %r = tfm.reduce %z {fn = "mean", dims = [2], keepdim = true} : (tensor<2x8x64xf32>) -> tensor<2x8x1xf32>
  %s = tfm.slice %z {dim = 1, start = 0, end = 4, step = 1} : (tensor<2x8x64xf32>) -> tensor<2x4x64xf32>
  // CHECK: tfm.send %z {loc = "pipeline:send0"} : (tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  %sent = tfm.send %z {loc = "pipeline:send0"} : (tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  func.return %z : tensor<2x8x64xf32>
}
