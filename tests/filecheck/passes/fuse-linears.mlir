// RUN: tasic-opt %s -p fuse-linears --split-input-file | filecheck %s
// fuse-linears: linears reading one input become one linear over a concatenated (derived) weight,
// each old result a slice of the fused one; biases concatenate too; split weights concatenate per chip.

// CHECK-LABEL: func.func @qkv
// CHECK-NOT:     name = "q"
// CHECK:         %[[W:.*]] = tfm.weight {name = "q|k|v#cat1"} : tensor<32x16xf32>
// CHECK-NEXT:    %[[Y:.*]] = tfm.linear %x, %[[W]] {loc = "q+k+v"} : (tensor<4x16xf32>, tensor<32x16xf32>) -> tensor<4x32xf32>
// CHECK-NEXT:    %q = tfm.slice %[[Y]] {loc = "q", dim = 1 : i64, start = 0 : i64, end = 16 : i64, step = 1 : i64} : (tensor<4x32xf32>) -> tensor<4x16xf32>
// CHECK-NEXT:    %k = tfm.slice %[[Y]] {loc = "k", dim = 1 : i64, start = 16 : i64, end = 24 : i64, step = 1 : i64} : (tensor<4x32xf32>) -> tensor<4x8xf32>
// CHECK-NEXT:    %v = tfm.slice %[[Y]] {loc = "v", dim = 1 : i64, start = 24 : i64, end = 32 : i64, step = 1 : i64} : (tensor<4x32xf32>) -> tensor<4x8xf32>
// The linear of another input stays as it is.
// CHECK:         tfm.linear %q, %{{.*}} : (tensor<4x16xf32>, tensor<8x16xf32>) -> tensor<4x8xf32>
func.func @qkv(%x: tensor<4x16xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>) {
  %wq = tfm.weight {name = "q"} : tensor<16x16xf32>
  %wk = tfm.weight {name = "k"} : tensor<8x16xf32>
  %wv = tfm.weight {name = "v"} : tensor<8x16xf32>
  %wo = tfm.weight {name = "o"} : tensor<8x16xf32>
  %q = tfm.linear %x, %wq {loc = "q"} : (tensor<4x16xf32>, tensor<16x16xf32>) -> tensor<4x16xf32>
  %k = tfm.linear %x, %wk {loc = "k"} : (tensor<4x16xf32>, tensor<8x16xf32>) -> tensor<4x8xf32>
  %v = tfm.linear %x, %wv {loc = "v"} : (tensor<4x16xf32>, tensor<8x16xf32>) -> tensor<4x8xf32>
  %o = tfm.linear %q, %wo : (tensor<4x16xf32>, tensor<8x16xf32>) -> tensor<4x8xf32>
  func.return %k, %v, %o : tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>
}

// -----

// Column-parallel weights (shard-tp) and their biases fuse per chip: #cat2 interleaves two blocks.
// CHECK-LABEL: func.func @gate_up
// CHECK:         %[[W:.*]] = tfm.weight {name = "gate|up#cat2", shard_dim = 0 : i64, shard_parts = 2 : i64} : tensor<16x8xf32>
// CHECK-NEXT:    %[[B:.*]] = tfm.weight {name = "bg|bu#cat2", shard_dim = 0 : i64, shard_parts = 2 : i64} : tensor<16xf32>
// CHECK-NEXT:    tfm.linear %x, %[[W]], %[[B]]
// CHECK:         tfm.unary %g {fn = "silu"}
func.func @gate_up(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %wg = tfm.weight {name = "gate", shard_dim = 0 : i64, shard_parts = 2 : i64} : tensor<8x8xf32>
  %wu = tfm.weight {name = "up", shard_dim = 0 : i64, shard_parts = 2 : i64} : tensor<8x8xf32>
  %bg = tfm.weight {name = "bg", shard_dim = 0 : i64, shard_parts = 2 : i64} : tensor<8xf32>
  %bu = tfm.weight {name = "bu", shard_dim = 0 : i64, shard_parts = 2 : i64} : tensor<8xf32>
  %g = tfm.linear %x, %wg, %bg : (tensor<4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  %u = tfm.linear %x, %wu, %bu : (tensor<4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  %s = tfm.unary %g {fn = "silu"} : (tensor<4x8xf32>) -> tensor<4x8xf32>
  %m = tfm.binary %s, %u {fn = "mul"} : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  func.return %m : tensor<4x8xf32>
}

// -----

// Differently split weights, or one with a bias and one without, do not fuse.
// CHECK-LABEL: func.func @mismatch
// CHECK-NOT:     #cat
// CHECK-COUNT-3: tfm.linear
func.func @mismatch(%x: tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>) {
  %wa = tfm.weight {name = "a", shard_dim = 0 : i64, shard_parts = 2 : i64} : tensor<8x8xf32>
  %wb = tfm.weight {name = "b"} : tensor<8x8xf32>
  %wc = tfm.weight {name = "c"} : tensor<8x8xf32>
  %bc = tfm.weight {name = "bc"} : tensor<8xf32>
  %a = tfm.linear %x, %wa : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  %b = tfm.linear %x, %wb : (tensor<4x8xf32>, tensor<8x8xf32>) -> tensor<4x8xf32>
  %c = tfm.linear %x, %wc, %bc : (tensor<4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<4x8xf32>
  func.return %a, %b, %c : tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>
}
