// RUN: tasic-opt %s -p raise-gelu | filecheck %s
// raise-gelu: 0.5 * x * (1 + erf(x / sqrt 2)) -> gelu_erf,
// 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) -> gelu_tanh,
// whatever the association and order of the multiplications.

// GPT-2's gelu_new as exported.
// CHECK-LABEL: func.func @gpt2_gelu_new
// CHECK-NEXT:    %y = tfm.unary %x {loc = "mlp.act:mul", fn = "gelu_tanh"} : (tensor<8x64xf32>) -> tensor<8x64xf32>
// CHECK-NEXT:    func.return %y
func.func @gpt2_gelu_new(%x: tensor<8x64xf32>) -> tensor<8x64xf32> {
  %h = tfm.scalar %x {fn = "mul", value = 0.5 : f64} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  %c = tfm.scalar %x {fn = "pow", value = 3.0 : f64} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  %d = tfm.scalar %c {fn = "mul", value = 0.044715 : f64} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  %e = tfm.binary %x, %d {fn = "add"} : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  %f = tfm.scalar %e {fn = "mul", value = 0.7978845608028654 : f64} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  %t = tfm.unary %f {fn = "tanh"} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  %u = tfm.scalar %t {fn = "add", value = 1.0 : f64} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  %y = tfm.binary %h, %u {loc = "mlp.act:mul", fn = "mul"} : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  func.return %y : tensor<8x64xf32>
}

// FastGELU-style: x * x * x, constants folded differently, (1 + tanh) first.
// CHECK-LABEL: func.func @tanh_reassociated
// CHECK-NEXT:    %y = tfm.unary %x {fn = "gelu_tanh"}
// CHECK-NEXT:    func.return %y
func.func @tanh_reassociated(%x: tensor<8x64xf32>) -> tensor<8x64xf32> {
  %x2 = tfm.binary %x, %x {fn = "mul"} : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  %x3 = tfm.binary %x2, %x {fn = "mul"} : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  %a = tfm.scalar %x3 {fn = "mul", value = 0.035677408136 : f64} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  %b = tfm.scalar %x {fn = "mul", value = 0.7978845608 : f64} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  %e = tfm.binary %b, %a {fn = "add"} : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  %t = tfm.unary %e {fn = "tanh"} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  %u = tfm.scalar %t {fn = "add", value = 1.0 : f64} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  %p = tfm.binary %u, %x {fn = "mul"} : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  %y = tfm.scalar %p {fn = "mul", value = 0.5 : f64} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  func.return %y : tensor<8x64xf32>
}

// The erf form with division by sqrt(2) and by 2.
// CHECK-LABEL: func.func @erf_form
// CHECK-NEXT:    %y = tfm.unary %x {fn = "gelu_erf"} : (tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
// CHECK-NEXT:    func.return %y
func.func @erf_form(%x: tensor<2x8x64xf32>) -> tensor<2x8x64xf32> {
  %s = tfm.scalar %x {fn = "div", value = 1.4142135623730951 : f64} : (tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  %e = tfm.unary %s {fn = "erf"} : (tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  %u = tfm.scalar %e {fn = "add", value = 1.0 : f64} : (tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  %p = tfm.binary %x, %u {fn = "mul"} : (tensor<2x8x64xf32>, tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  %y = tfm.scalar %p {fn = "div", value = 2.0 : f64} : (tensor<2x8x64xf32>) -> tensor<2x8x64xf32>
  func.return %y : tensor<2x8x64xf32>
}

// Negative: wrong constant (0.05 instead of 0.044715) and an intermediate with another user.
// CHECK-LABEL: func.func @not_gelu
// CHECK-NOT:     gelu
// CHECK:         tfm.unary %f {fn = "tanh"}
// CHECK:         tfm.unary %s2 {fn = "erf"}
// CHECK-NOT:     gelu
// CHECK:         func.return
func.func @not_gelu(%x: tensor<8x64xf32>) -> (tensor<8x64xf32>, tensor<8x64xf32>, tensor<8x64xf32>) {
  %h = tfm.scalar %x {fn = "mul", value = 0.5 : f64} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  %c = tfm.scalar %x {fn = "pow", value = 3.0 : f64} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  %d = tfm.scalar %c {fn = "mul", value = 0.05 : f64} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  %e = tfm.binary %x, %d {fn = "add"} : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  %f = tfm.scalar %e {fn = "mul", value = 0.7978845608028654 : f64} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  %t = tfm.unary %f {fn = "tanh"} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  %u = tfm.scalar %t {fn = "add", value = 1.0 : f64} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  %y = tfm.binary %h, %u {fn = "mul"} : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  %s2 = tfm.scalar %x {fn = "mul", value = 0.7071067811865476 : f64} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  %e2 = tfm.unary %s2 {fn = "erf"} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  %u2 = tfm.scalar %e2 {fn = "add", value = 1.0 : f64} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  %p2 = tfm.binary %x, %u2 {fn = "mul"} : (tensor<8x64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  %y2 = tfm.scalar %p2 {fn = "mul", value = 0.5 : f64} : (tensor<8x64xf32>) -> tensor<8x64xf32>
  func.return %y, %y2, %e2 : tensor<8x64xf32>, tensor<8x64xf32>, tensor<8x64xf32>
}
