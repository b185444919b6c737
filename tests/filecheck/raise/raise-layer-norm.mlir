// RUN: tasic-opt %s -p raise-layer-norm | filecheck %s
// raise-layer-norm: mean / centre / variance / + eps / rsqrt / * gamma / + beta
// over the last dimension -> tfm.layer_norm.

// CHECK-LABEL: func.func @rsqrt_form
// CHECK-NEXT:    %g = tfm.weight {name = "ln.weight"} : tensor<32xf32>
// CHECK-NEXT:    %b = tfm.weight {name = "ln.bias"} : tensor<32xf32>
// CHECK-NEXT:    %y = tfm.layer_norm %x, %g, %b {loc = "ln:mul", eps = 1.000000e-05 : f64} : (tensor<2x8x32xf32>, tensor<32xf32>, tensor<32xf32>) -> tensor<2x8x32xf32>
// CHECK-NEXT:    func.return %y
func.func @rsqrt_form(%x: tensor<2x8x32xf32>) -> tensor<2x8x32xf32> {
  %g = tfm.weight {name = "ln.weight"} : tensor<32xf32>
  %b = tfm.weight {name = "ln.bias"} : tensor<32xf32>
  %mu = tfm.reduce %x {fn = "mean", dims = [2], keepdim = true} : (tensor<2x8x32xf32>) -> tensor<2x8x1xf32>
  %d = tfm.binary %x, %mu {fn = "sub"} : (tensor<2x8x32xf32>, tensor<2x8x1xf32>) -> tensor<2x8x32xf32>
  %sq = tfm.scalar %d {fn = "pow", value = 2.0 : f64} : (tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
  %var = tfm.reduce %sq {fn = "mean", dims = [2], keepdim = true} : (tensor<2x8x32xf32>) -> tensor<2x8x1xf32>
  %ve = tfm.scalar %var {fn = "add", value = 1.0e-05 : f64} : (tensor<2x8x1xf32>) -> tensor<2x8x1xf32>
  %r = tfm.unary %ve {fn = "rsqrt"} : (tensor<2x8x1xf32>) -> tensor<2x8x1xf32>
  %n = tfm.binary %d, %r {loc = "ln:mul", fn = "mul"} : (tensor<2x8x32xf32>, tensor<2x8x1xf32>) -> tensor<2x8x32xf32>
  %s = tfm.binary %g, %n {fn = "mul"} : (tensor<32xf32>, tensor<2x8x32xf32>) -> tensor<2x8x32xf32>
  %y = tfm.binary %s, %b {fn = "add"} : (tensor<2x8x32xf32>, tensor<32xf32>) -> tensor<2x8x32xf32>
  func.return %y : tensor<2x8x32xf32>
}

// The original BERT LayerNorm: x - u computed twice, d * d, divide by sqrt.
// CHECK-LABEL: func.func @sqrt_div_form
// CHECK-NOT:     tfm.reduce
// CHECK:         %y = tfm.layer_norm %x, %g, %b {eps = 1.000000e-12 : f64}
// CHECK-NEXT:    func.return %y
func.func @sqrt_div_form(%x: tensor<8x32xf32>) -> tensor<8x32xf32> {
  %g = tfm.weight {name = "ln.weight"} : tensor<32xf32>
  %b = tfm.weight {name = "ln.bias"} : tensor<32xf32>
  %mu = tfm.reduce %x {fn = "mean", dims = [1], keepdim = true} : (tensor<8x32xf32>) -> tensor<8x1xf32>
  %d1 = tfm.binary %x, %mu {fn = "sub"} : (tensor<8x32xf32>, tensor<8x1xf32>) -> tensor<8x32xf32>
  %sq = tfm.binary %d1, %d1 {fn = "mul"} : (tensor<8x32xf32>, tensor<8x32xf32>) -> tensor<8x32xf32>
  %var = tfm.reduce %sq {fn = "mean", dims = [1], keepdim = true} : (tensor<8x32xf32>) -> tensor<8x1xf32>
  %d2 = tfm.binary %x, %mu {fn = "sub"} : (tensor<8x32xf32>, tensor<8x1xf32>) -> tensor<8x32xf32>
  %ve = tfm.scalar %var {fn = "add", value = 1.0e-12 : f64} : (tensor<8x1xf32>) -> tensor<8x1xf32>
  %s = tfm.unary %ve {fn = "sqrt"} : (tensor<8x1xf32>) -> tensor<8x1xf32>
  %n = tfm.binary %d2, %s {fn = "div"} : (tensor<8x32xf32>, tensor<8x1xf32>) -> tensor<8x32xf32>
  %sc = tfm.binary %n, %g {fn = "mul"} : (tensor<8x32xf32>, tensor<32xf32>) -> tensor<8x32xf32>
  %y = tfm.binary %b, %sc {fn = "add"} : (tensor<32xf32>, tensor<8x32xf32>) -> tensor<8x32xf32>
  func.return %y : tensor<8x32xf32>
}

// Negative: the variance is also returned, so it cannot be fused away.
// CHECK-LABEL: func.func @variance_used_elsewhere
// CHECK-NOT:     tfm.layer_norm
// CHECK:         tfm.unary %ve {fn = "rsqrt"}
// CHECK-NOT:     tfm.layer_norm
// CHECK:         func.return
func.func @variance_used_elsewhere(%x: tensor<8x32xf32>) -> (tensor<8x32xf32>, tensor<8x1xf32>) {
  %g = tfm.weight {name = "ln.weight"} : tensor<32xf32>
  %b = tfm.weight {name = "ln.bias"} : tensor<32xf32>
  %mu = tfm.reduce %x {fn = "mean", dims = [1], keepdim = true} : (tensor<8x32xf32>) -> tensor<8x1xf32>
  %d = tfm.binary %x, %mu {fn = "sub"} : (tensor<8x32xf32>, tensor<8x1xf32>) -> tensor<8x32xf32>
  %sq = tfm.scalar %d {fn = "pow", value = 2.0 : f64} : (tensor<8x32xf32>) -> tensor<8x32xf32>
  %var = tfm.reduce %sq {fn = "mean", dims = [1], keepdim = true} : (tensor<8x32xf32>) -> tensor<8x1xf32>
  %ve = tfm.scalar %var {fn = "add", value = 1.0e-05 : f64} : (tensor<8x1xf32>) -> tensor<8x1xf32>
  %r = tfm.unary %ve {fn = "rsqrt"} : (tensor<8x1xf32>) -> tensor<8x1xf32>
  %n = tfm.binary %d, %r {fn = "mul"} : (tensor<8x32xf32>, tensor<8x1xf32>) -> tensor<8x32xf32>
  %s = tfm.binary %n, %g {fn = "mul"} : (tensor<8x32xf32>, tensor<32xf32>) -> tensor<8x32xf32>
  %y = tfm.binary %s, %b {fn = "add"} : (tensor<8x32xf32>, tensor<32xf32>) -> tensor<8x32xf32>
  func.return %y, %var : tensor<8x32xf32>, tensor<8x1xf32>
}

// Negative: normalised over the first dimension, not the last.
// CHECK-LABEL: func.func @wrong_dimension
// CHECK-NOT:     tfm.layer_norm
// CHECK:         func.return
func.func @wrong_dimension(%x: tensor<32x32xf32>) -> tensor<32x32xf32> {
  %g = tfm.weight {name = "ln.weight"} : tensor<32xf32>
  %b = tfm.weight {name = "ln.bias"} : tensor<32xf32>
  %mu = tfm.reduce %x {fn = "mean", dims = [0], keepdim = true} : (tensor<32x32xf32>) -> tensor<1x32xf32>
  %d = tfm.binary %x, %mu {fn = "sub"} : (tensor<32x32xf32>, tensor<1x32xf32>) -> tensor<32x32xf32>
  %sq = tfm.scalar %d {fn = "pow", value = 2.0 : f64} : (tensor<32x32xf32>) -> tensor<32x32xf32>
  %var = tfm.reduce %sq {fn = "mean", dims = [0], keepdim = true} : (tensor<32x32xf32>) -> tensor<1x32xf32>
  %ve = tfm.scalar %var {fn = "add", value = 1.0e-05 : f64} : (tensor<1x32xf32>) -> tensor<1x32xf32>
  %r = tfm.unary %ve {fn = "rsqrt"} : (tensor<1x32xf32>) -> tensor<1x32xf32>
  %n = tfm.binary %d, %r {fn = "mul"} : (tensor<32x32xf32>, tensor<1x32xf32>) -> tensor<32x32xf32>
  %s = tfm.binary %n, %g {fn = "mul"} : (tensor<32x32xf32>, tensor<32xf32>) -> tensor<32x32xf32>
  %y = tfm.binary %s, %b {fn = "add"} : (tensor<32x32xf32>, tensor<32xf32>) -> tensor<32x32xf32>
  func.return %y : tensor<32x32xf32>
}
