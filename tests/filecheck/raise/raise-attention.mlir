// RUN: tasic-opt %s -p raise-attention | filecheck %s
// raise-attention: softmax(q @ k^T * scale [+ mask]) @ v -> tfm.attention,
// through the 3-D bmm reshapes of torch.export and HF's repeat_kv (GQA).

// HF eager attention as exported: 4-D matmuls flattened to bmm, additive mask.
// CHECK-LABEL: func.func @eager_bmm
// CHECK-NEXT:    %o = tfm.attention %q, %k, %v, %mask {loc = "attn:bmm", causal = false, scale = 2.500000e-01 : f64} : (tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>, tensor<1x1x8x8xf32>) -> tensor<1x4x8x16xf32>
// CHECK-NEXT:    func.return %o
func.func @eager_bmm(%q: tensor<1x4x8x16xf32>, %k: tensor<1x4x8x16xf32>, %v: tensor<1x4x8x16xf32>, %mask: tensor<1x1x8x8xf32>) -> tensor<1x4x8x16xf32> {
  %kt = tfm.transpose %k {perm = [0, 1, 3, 2]} : (tensor<1x4x8x16xf32>) -> tensor<1x4x16x8xf32>
  %q3 = tfm.reshape %q : (tensor<1x4x8x16xf32>) -> tensor<4x8x16xf32>
  %kt3 = tfm.reshape %kt : (tensor<1x4x16x8xf32>) -> tensor<4x16x8xf32>
  %s3 = tfm.matmul %q3, %kt3 : (tensor<4x8x16xf32>, tensor<4x16x8xf32>) -> tensor<4x8x8xf32>
  %s = tfm.reshape %s3 : (tensor<4x8x8xf32>) -> tensor<1x4x8x8xf32>
  %ss = tfm.scalar %s {fn = "mul", value = 0.25 : f64} : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
  %sm = tfm.binary %ss, %mask {fn = "add"} : (tensor<1x4x8x8xf32>, tensor<1x1x8x8xf32>) -> tensor<1x4x8x8xf32>
  %p = tfm.softmax %sm : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
  %p3 = tfm.reshape %p : (tensor<1x4x8x8xf32>) -> tensor<4x8x8xf32>
  %v3 = tfm.reshape %v : (tensor<1x4x8x16xf32>) -> tensor<4x8x16xf32>
  %o3 = tfm.matmul %p3, %v3 {loc = "attn:bmm"} : (tensor<4x8x8xf32>, tensor<4x8x16xf32>) -> tensor<4x8x16xf32>
  %o = tfm.reshape %o3 : (tensor<4x8x16xf32>) -> tensor<1x4x8x16xf32>
  func.return %o : tensor<1x4x8x16xf32>
}

// Scale by division, no mask, k^T taken straight from the head split
// ([B,S,H,D] -> [B,H,D,S]): the key is that permutation with its last two swapped.
// CHECK-LABEL: func.func @divided_scores
// CHECK-NEXT:    %[[K:.*]] = tfm.transpose %kh {perm = [0 : i64, 2 : i64, 1 : i64, 3 : i64]} : (tensor<2x8x4x16xf32>) -> tensor<2x4x8x16xf32>
// CHECK-NEXT:    %[[O:.*]] = tfm.attention %q, %[[K]], %v {causal = false, scale = 2.500000e-01 : f64}
// CHECK-NEXT:    func.return %[[O]]
func.func @divided_scores(%q: tensor<2x4x8x16xf32>, %kh: tensor<2x8x4x16xf32>, %v: tensor<2x4x8x16xf32>) -> tensor<2x4x8x16xf32> {
  %kt = tfm.transpose %kh {perm = [0, 2, 3, 1]} : (tensor<2x8x4x16xf32>) -> tensor<2x4x16x8xf32>
  %s = tfm.matmul %q, %kt : (tensor<2x4x8x16xf32>, tensor<2x4x16x8xf32>) -> tensor<2x4x8x8xf32>
  %ss = tfm.scalar %s {fn = "div", value = 4.0 : f64} : (tensor<2x4x8x8xf32>) -> tensor<2x4x8x8xf32>
  %p = tfm.softmax %ss : (tensor<2x4x8x8xf32>) -> tensor<2x4x8x8xf32>
  %o = tfm.matmul %p, %v : (tensor<2x4x8x8xf32>, tensor<2x4x8x16xf32>) -> tensor<2x4x8x16xf32>
  func.return %o : tensor<2x4x8x16xf32>
}

// HF repeat_kv before attention: the op takes the 2 kv heads directly.
// CHECK-LABEL: func.func @grouped_query
// CHECK-NEXT:    %o = tfm.attention %q, %k, %v {causal = true, scale = 2.500000e-01 : f64} : (tensor<1x4x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>) -> tensor<1x4x8x16xf32>
// CHECK-NEXT:    func.return %o
func.func @grouped_query(%q: tensor<1x4x8x16xf32>, %k: tensor<1x2x8x16xf32>, %v: tensor<1x2x8x16xf32>) -> tensor<1x4x8x16xf32> {
  %k5 = tfm.reshape %k : (tensor<1x2x8x16xf32>) -> tensor<1x2x1x8x16xf32>
  %ke = tfm.expand %k5 : (tensor<1x2x1x8x16xf32>) -> tensor<1x2x2x8x16xf32>
  %kr = tfm.reshape %ke : (tensor<1x2x2x8x16xf32>) -> tensor<1x4x8x16xf32>
  %v5 = tfm.reshape %v : (tensor<1x2x8x16xf32>) -> tensor<1x2x1x8x16xf32>
  %ve = tfm.expand %v5 : (tensor<1x2x1x8x16xf32>) -> tensor<1x2x2x8x16xf32>
  %vr = tfm.reshape %ve : (tensor<1x2x2x8x16xf32>) -> tensor<1x4x8x16xf32>
  %o = tfm.attention %q, %kr, %vr {causal = true, scale = 0.25 : f64} : (tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>) -> tensor<1x4x8x16xf32>
  func.return %o : tensor<1x4x8x16xf32>
}

// Negative: the probabilities are also returned, and a 3-D attention has no head axis.
// CHECK-LABEL: func.func @not_raised
// CHECK-NOT:     tfm.attention
// CHECK:         tfm.softmax
// CHECK:         tfm.softmax
// CHECK-NOT:     tfm.attention
// CHECK:         func.return
func.func @not_raised(%q: tensor<1x4x8x16xf32>, %k: tensor<1x4x8x16xf32>, %v: tensor<1x4x8x16xf32>, %a: tensor<8x16xf32>) -> (tensor<1x4x8x16xf32>, tensor<1x4x8x8xf32>, tensor<8x16xf32>) {
  %kt = tfm.transpose %k {perm = [0, 1, 3, 2]} : (tensor<1x4x8x16xf32>) -> tensor<1x4x16x8xf32>
  %s = tfm.matmul %q, %kt : (tensor<1x4x8x16xf32>, tensor<1x4x16x8xf32>) -> tensor<1x4x8x8xf32>
  %p = tfm.softmax %s : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
  %o = tfm.matmul %p, %v : (tensor<1x4x8x8xf32>, tensor<1x4x8x16xf32>) -> tensor<1x4x8x16xf32>
  %at = tfm.transpose %a {perm = [1, 0]} : (tensor<8x16xf32>) -> tensor<16x8xf32>
  %s2 = tfm.matmul %a, %at : (tensor<8x16xf32>, tensor<16x8xf32>) -> tensor<8x8xf32>
  %p2 = tfm.softmax %s2 : (tensor<8x8xf32>) -> tensor<8x8xf32>
  %o2 = tfm.matmul %p2, %a : (tensor<8x8xf32>, tensor<8x16xf32>) -> tensor<8x16xf32>
  func.return %o, %p, %o2 : tensor<1x4x8x16xf32>, tensor<1x4x8x8xf32>, tensor<8x16xf32>
}
