// RUN: tasic-opt %s -p raise-rms-norm | filecheck %s
// raise-rms-norm: HF RMSNorm (x * rsqrt(mean(x^2) + eps), optional cast, * weight) -> tfm.rms_norm.

// As Llama exports it: weight * (x * rsqrt(mean(x.pow(2)) + eps)).
// CHECK-LABEL: func.func @llama_form
// CHECK-NEXT:    %g = tfm.weight {name = "norm.weight"} : tensor<32xf32>
// CHECK-NEXT:    %y = tfm.rms_norm %x, %g {loc = "norm:mul", eps = 1.000000e-06 : f64} : (tensor<1x8x32xf32>, tensor<32xf32>) -> tensor<1x8x32xf32>
// CHECK-NEXT:    func.return %y
func.func @llama_form(%x: tensor<1x8x32xf32>) -> tensor<1x8x32xf32> {
  %g = tfm.weight {name = "norm.weight"} : tensor<32xf32>
  %sq = tfm.scalar %x {fn = "pow", value = 2.0 : f64} : (tensor<1x8x32xf32>) -> tensor<1x8x32xf32>
  %ms = tfm.reduce %sq {fn = "mean", dims = [2], keepdim = true} : (tensor<1x8x32xf32>) -> tensor<1x8x1xf32>
  %ve = tfm.scalar %ms {fn = "add", value = 1.0e-06 : f64} : (tensor<1x8x1xf32>) -> tensor<1x8x1xf32>
  %r = tfm.unary %ve {fn = "rsqrt"} : (tensor<1x8x1xf32>) -> tensor<1x8x1xf32>
  %n = tfm.binary %x, %r {loc = "norm:mul", fn = "mul"} : (tensor<1x8x32xf32>, tensor<1x8x1xf32>) -> tensor<1x8x32xf32>
  %y = tfm.binary %g, %n {fn = "mul"} : (tensor<32xf32>, tensor<1x8x32xf32>) -> tensor<1x8x32xf32>
  func.return %y : tensor<1x8x32xf32>
}

// Computed in f32 for a bf16 model: x*x, a cast back before the scale.
// CHECK-LABEL: func.func @cast_back
// CHECK-NOT:     tfm.reduce
// CHECK:         %[[NORM:.*]] = tfm.rms_norm %x, %g {eps = 1.000000e-05 : f64} : (tensor<8x32xf32>, tensor<32xbf16>) -> tensor<8x32xf32>
// CHECK-NEXT:    %[[CAST:.*]] = tfm.cast %[[NORM]] : (tensor<8x32xf32>) -> tensor<8x32xbf16>
// CHECK-NEXT:    func.return %[[CAST]]
func.func @cast_back(%x: tensor<8x32xf32>) -> tensor<8x32xbf16> {
  %g = tfm.weight {name = "norm.weight"} : tensor<32xbf16>
  %sq = tfm.binary %x, %x {fn = "mul"} : (tensor<8x32xf32>, tensor<8x32xf32>) -> tensor<8x32xf32>
  %ms = tfm.reduce %sq {fn = "mean", dims = [1], keepdim = true} : (tensor<8x32xf32>) -> tensor<8x1xf32>
  %ve = tfm.scalar %ms {fn = "add", value = 1.0e-05 : f64} : (tensor<8x1xf32>) -> tensor<8x1xf32>
  %r = tfm.unary %ve {fn = "rsqrt"} : (tensor<8x1xf32>) -> tensor<8x1xf32>
  %n = tfm.binary %r, %x {fn = "mul"} : (tensor<8x1xf32>, tensor<8x32xf32>) -> tensor<8x32xf32>
  %c = tfm.cast %n : (tensor<8x32xf32>) -> tensor<8x32xbf16>
  %y = tfm.binary %c, %g {fn = "mul"} : (tensor<8x32xbf16>, tensor<32xbf16>) -> tensor<8x32xbf16>
  func.return %y : tensor<8x32xbf16>
}

// Negative: the mean of squares is of another tensor than the one scaled.
// CHECK-LABEL: func.func @different_tensors
// CHECK-NOT:     tfm.rms_norm
// CHECK:         tfm.unary %ve {fn = "rsqrt"}
// CHECK-NOT:     tfm.rms_norm
// CHECK:         func.return
func.func @different_tensors(%x: tensor<8x32xf32>, %z: tensor<8x32xf32>) -> tensor<8x32xf32> {
  %g = tfm.weight {name = "norm.weight"} : tensor<32xf32>
  %sq = tfm.scalar %z {fn = "pow", value = 2.0 : f64} : (tensor<8x32xf32>) -> tensor<8x32xf32>
  %ms = tfm.reduce %sq {fn = "mean", dims = [1], keepdim = true} : (tensor<8x32xf32>) -> tensor<8x1xf32>
  %ve = tfm.scalar %ms {fn = "add", value = 1.0e-06 : f64} : (tensor<8x1xf32>) -> tensor<8x1xf32>
  %r = tfm.unary %ve {fn = "rsqrt"} : (tensor<8x1xf32>) -> tensor<8x1xf32>
  %n = tfm.binary %x, %r {fn = "mul"} : (tensor<8x32xf32>, tensor<8x1xf32>) -> tensor<8x32xf32>
  %y = tfm.binary %g, %n {fn = "mul"} : (tensor<32xf32>, tensor<8x32xf32>) -> tensor<8x32xf32>
  func.return %y : tensor<8x32xf32>
}

// Negative: the normalised value is also returned.
// CHECK-LABEL: func.func @normalised_used_elsewhere
// CHECK-NOT:     tfm.rms_norm
// CHECK:         func.return
func.func @normalised_used_elsewhere(%x: tensor<8x32xf32>) -> (tensor<8x32xf32>, tensor<8x32xf32>) {
  %g = tfm.weight {name = "norm.weight"} : tensor<32xf32>
  %sq = tfm.scalar %x {fn = "pow", value = 2.0 : f64} : (tensor<8x32xf32>) -> tensor<8x32xf32>
  %ms = tfm.reduce %sq {fn = "mean", dims = [1], keepdim = true} : (tensor<8x32xf32>) -> tensor<8x1xf32>
  %ve = tfm.scalar %ms {fn = "add", value = 1.0e-06 : f64} : (tensor<8x1xf32>) -> tensor<8x1xf32>
  %r = tfm.unary %ve {fn = "rsqrt"} : (tensor<8x1xf32>) -> tensor<8x1xf32>
  %n = tfm.binary %x, %r {fn = "mul"} : (tensor<8x32xf32>, tensor<8x1xf32>) -> tensor<8x32xf32>
  %y = tfm.binary %g, %n {fn = "mul"} : (tensor<32xf32>, tensor<8x32xf32>) -> tensor<8x32xf32>
  func.return %y, %n : tensor<8x32xf32>, tensor<8x32xf32>
}
