// RUN: tasic-opt %s -p raise-linear | filecheck %s
// raise-linear: matmul by a transposed 2-D weight (+ a 1-D weight bias, + the
// flatten/unflatten reshapes torch.export puts around addmm) -> tfm.linear.

// CHECK-LABEL: func.func @addmm_between_reshapes
// CHECK-NEXT:    %w = tfm.weight {name = "fc.weight"} : tensor<64x32xf32>
// CHECK-NEXT:    %b = tfm.weight {name = "fc.bias"} : tensor<64xf32>
// CHECK-NEXT:    %y = tfm.linear %x, %w, %b {loc = "fc:addmm"} : (tensor<2x8x32xf32>, tensor<64x32xf32>, tensor<64xf32>) -> tensor<2x8x64xf32>
// CHECK-NEXT:    func.return %y : tensor<2x8x64xf32>
func.func @addmm_between_reshapes(%x: tensor<2x8x32xf32>) -> tensor<2x8x64xf32> {
  %w = tfm.weight {name = "fc.weight"} : tensor<64x32xf32>
  %b = tfm.weight {name = "fc.bias"} : tensor<64xf32>
  %x2 = tfm.reshape %x {loc = "fc:view"} : (tensor<2x8x32xf32>) -> tensor<16x32xf32>
  %wt = tfm.transpose %w {loc = "fc:addmm", perm = [1, 0]} : (tensor<64x32xf32>) -> tensor<32x64xf32>
  %m = tfm.matmul %x2, %wt {loc = "fc:addmm"} : (tensor<16x32xf32>, tensor<32x64xf32>) -> tensor<16x64xf32>
  %a = tfm.binary %m, %b {loc = "fc:addmm", fn = "add"} : (tensor<16x64xf32>, tensor<64xf32>) -> tensor<16x64xf32>
  %y = tfm.reshape %a {loc = "fc:view"} : (tensor<16x64xf32>) -> tensor<2x8x64xf32>
  func.return %y : tensor<2x8x64xf32>
}

// Bias first, 2-D input, no reshapes.
// CHECK-LABEL: func.func @bias_first
// CHECK-NOT:     tfm.matmul
// CHECK:         %y = tfm.linear %x, %w, %b : (tensor<8x32xf32>, tensor<64x32xf32>, tensor<64xf32>) -> tensor<8x64xf32>
// CHECK-NEXT:    func.return %y
func.func @bias_first(%x: tensor<8x32xf32>) -> tensor<8x64xf32> {
  %w = tfm.weight {name = "fc.weight"} : tensor<64x32xf32>
  %b = tfm.weight {name = "fc.bias"} : tensor<64xf32>
  %wt = tfm.transpose %w {perm = [1, 0]} : (tensor<64x32xf32>) -> tensor<32x64xf32>
  %m = tfm.matmul %x, %wt : (tensor<8x32xf32>, tensor<32x64xf32>) -> tensor<8x64xf32>
  %y = tfm.binary %b, %m {fn = "add"} : (tensor<64xf32>, tensor<8x64xf32>) -> tensor<8x64xf32>
  func.return %y : tensor<8x64xf32>
}

// No bias; the tied weight keeps its other user (an embedding).
// CHECK-LABEL: func.func @tied_weight_without_bias
// CHECK:         %e = tfm.embedding %w, %ids
// CHECK-NEXT:    %y = tfm.linear %e, %w : (tensor<1x8x32xf32>, tensor<100x32xf32>) -> tensor<1x8x100xf32>
// CHECK-NEXT:    func.return %y
func.func @tied_weight_without_bias(%ids: tensor<1x8xi64>) -> tensor<1x8x100xf32> {
  %w = tfm.weight {name = "wte"} : tensor<100x32xf32>
  %e = tfm.embedding %w, %ids : (tensor<100x32xf32>, tensor<1x8xi64>) -> tensor<1x8x32xf32>
  %e2 = tfm.reshape %e : (tensor<1x8x32xf32>) -> tensor<8x32xf32>
  %wt = tfm.transpose %w {perm = [1, 0]} : (tensor<100x32xf32>) -> tensor<32x100xf32>
  %m = tfm.matmul %e2, %wt : (tensor<8x32xf32>, tensor<32x100xf32>) -> tensor<8x100xf32>
  %y = tfm.reshape %m : (tensor<8x100xf32>) -> tensor<1x8x100xf32>
  func.return %y : tensor<1x8x100xf32>
}

// Negative: the matrix is not a weight, and a transposed weight has another user.
// CHECK-LABEL: func.func @not_raised
// CHECK-NOT:     tfm.linear
// CHECK:         tfm.matmul %x, %v
// CHECK:         tfm.matmul %x, %wt
// CHECK-NOT:     tfm.linear
// CHECK:         func.return
func.func @not_raised(%x: tensor<8x32xf32>, %v: tensor<32x64xf32>) -> (tensor<8x64xf32>, tensor<8x64xf32>, tensor<32x64xf32>) {
  %a = tfm.matmul %x, %v : (tensor<8x32xf32>, tensor<32x64xf32>) -> tensor<8x64xf32>
  %w = tfm.weight {name = "w"} : tensor<64x32xf32>
  %wt = tfm.transpose %w {perm = [1, 0]} : (tensor<64x32xf32>) -> tensor<32x64xf32>
  %b = tfm.matmul %x, %wt : (tensor<8x32xf32>, tensor<32x64xf32>) -> tensor<8x64xf32>
  func.return %a, %b, %wt : tensor<8x64xf32>, tensor<8x64xf32>, tensor<32x64xf32>
}
