// RUN: tasic-opt %s --split-input-file -p fold-attention-scale | filecheck %s
// fold-attention-scale: the attention's scale moves into the query projection's weight and bias (derived
// weights `#scaled<x>`) when the projection reaches only attention queries, through layout ops and rope.

func.func @fold(%x: tensor<4x16xf32>, %cos: tensor<4x1x8xf32>, %sin: tensor<4x1x8xf32>) -> tensor<1x2x4x8xf32> {
  %wq = tfm.weight {name = "q.weight"} : tensor<16x16xf32>
  %bq = tfm.weight {name = "q.bias"} : tensor<16xf32>
  %wk = tfm.weight {name = "k.weight"} : tensor<16x16xf32>
  %q = tfm.linear %x, %wq, %bq : (tensor<4x16xf32>, tensor<16x16xf32>, tensor<16xf32>) -> tensor<4x16xf32>
  %k = tfm.linear %x, %wk : (tensor<4x16xf32>, tensor<16x16xf32>) -> tensor<4x16xf32>
  %q3 = tfm.reshape %q : (tensor<4x16xf32>) -> tensor<4x2x8xf32>
  %qr = tfm.rope %q3, %cos, %sin : (tensor<4x2x8xf32>, tensor<4x1x8xf32>, tensor<4x1x8xf32>) -> tensor<4x2x8xf32>
  %qh = tfm.transpose %qr {perm = [1 : i64, 0 : i64, 2 : i64]} : (tensor<4x2x8xf32>) -> tensor<2x4x8xf32>
  %qb = tfm.reshape %qh : (tensor<2x4x8xf32>) -> tensor<1x2x4x8xf32>
  %k3 = tfm.reshape %k : (tensor<4x16xf32>) -> tensor<4x2x8xf32>
  %kh = tfm.transpose %k3 {perm = [1 : i64, 0 : i64, 2 : i64]} : (tensor<4x2x8xf32>) -> tensor<2x4x8xf32>
  %kb = tfm.reshape %kh : (tensor<2x4x8xf32>) -> tensor<1x2x4x8xf32>
  %a = tfm.attention %qb, %kb, %kb {causal = true, scale = 0.25 : f64} : (tensor<1x2x4x8xf32>, tensor<1x2x4x8xf32>, tensor<1x2x4x8xf32>) -> tensor<1x2x4x8xf32>
  func.return %a : tensor<1x2x4x8xf32>
}

// CHECK-LABEL: func.func @fold
// CHECK-DAG:   %[[WQ:.*]] = tfm.weight {name = "q.weight#scaled0.25"} : tensor<16x16xf32>
// CHECK-DAG:   %[[BQ:.*]] = tfm.weight {name = "q.bias#scaled0.25"} : tensor<16xf32>
// CHECK-DAG:   %wk = tfm.weight {name = "k.weight"} : tensor<16x16xf32>
// CHECK:       tfm.linear %x, %[[WQ]], %[[BQ]]
// CHECK:       tfm.attention %qb, %kb, %kb {causal = true, scale = 1.000000e+00 : f64}
// CHECK-NOT:   tfm.weight {name = "q.weight"}

// -----

// The query projection's result is also returned: scaling it would change that output, so nothing folds.
func.func @keep(%x: tensor<4x16xf32>) -> (tensor<1x2x4x8xf32>, tensor<4x16xf32>) {
  %wq = tfm.weight {name = "q.weight"} : tensor<16x16xf32>
  %q = tfm.linear %x, %wq : (tensor<4x16xf32>, tensor<16x16xf32>) -> tensor<4x16xf32>
  %q3 = tfm.reshape %q : (tensor<4x16xf32>) -> tensor<4x2x8xf32>
  %qh = tfm.transpose %q3 {perm = [1 : i64, 0 : i64, 2 : i64]} : (tensor<4x2x8xf32>) -> tensor<2x4x8xf32>
  %qb = tfm.reshape %qh : (tensor<2x4x8xf32>) -> tensor<1x2x4x8xf32>
  %a = tfm.attention %qb, %qb, %qb {causal = true, scale = 0.25 : f64} : (tensor<1x2x4x8xf32>, tensor<1x2x4x8xf32>, tensor<1x2x4x8xf32>) -> tensor<1x2x4x8xf32>
  func.return %a, %q : tensor<1x2x4x8xf32>, tensor<4x16xf32>
}

// CHECK-LABEL: func.func @keep
// CHECK:       tfm.weight {name = "q.weight"}
// CHECK:       tfm.attention %qb, %qb, %qb {causal = true, scale = 2.500000e-01 : f64}
