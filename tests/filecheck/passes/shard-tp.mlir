// RUN: tasic-opt %s -p "shard-tp{chips=2}" | filecheck %s
// shard-tp: q/k/v and gate/up become column-parallel (weight rows split), o and down row-parallel
// (weight columns split) followed by an all-reduce; the attention runs on each chip's heads; the
// KV-cache state is split by heads; the head (its output is a result) stays whole.

// CHECK-LABEL: func.func @block
// CHECK-SAME:    (%x: tensor<4x16xf32>, %slots: tensor<4xi64>, %cache: tensor<1x1x8x8xf32>)
// CHECK-SAME:    tfm.shards = {cache = 1 : i64}, tfm.chips = 2 : i64
// CHECK:         tfm.weight {name = "q", shard_dim = 0 : i64, shard_parts = 2 : i64} : tensor<8x16xf32>
// CHECK:         %q = tfm.linear %x, %{{.*}} : (tensor<4x16xf32>, tensor<8x16xf32>) -> tensor<4x8xf32>
// CHECK:         %q4 = tfm.reshape %q : (tensor<4x8xf32>) -> tensor<4x1x8xf32>
// CHECK:         tfm.index_copy %cache, %slots, %{{.*}} {dim = 2 : i64} : (tensor<1x1x8x8xf32>, tensor<4xi64>, tensor<1x1x4x8xf32>) -> tensor<1x1x8x8xf32>
// CHECK:         tfm.attention {{.*}} -> tensor<1x1x4x8xf32>
// CHECK:         tfm.weight {name = "o", shard_dim = 1 : i64, shard_parts = 2 : i64} : tensor<16x8xf32>
// CHECK:         %[[PARTIAL:[0-9]+]] = tfm.linear %a2, %{{[0-9]+}} : (tensor<4x8xf32>, tensor<16x8xf32>) -> tensor<4x16xf32>
// CHECK-NEXT:    %o = tfm.all_reduce %[[PARTIAL]] {chips = 2 : i64} : (tensor<4x16xf32>) -> tensor<4x16xf32>
// CHECK-NEXT:    %h = tfm.binary %x, %o {fn = "add"}
// CHECK:         tfm.weight {name = "head"} : tensor<10x16xf32>
// CHECK:         func.return
func.func @block(%x: tensor<4x16xf32>, %slots: tensor<4xi64>, %cache: tensor<1x2x8x8xf32>) -> (tensor<4x10xf32>, tensor<1x2x8x8xf32>) attributes {tfm.input_names = ["x", "slots", "cache"], tfm.output_names = ["logits", "cache"], tfm.state_names = ["cache"]} {
  %wq = tfm.weight {name = "q"} : tensor<16x16xf32>
  %wk = tfm.weight {name = "k"} : tensor<16x16xf32>
  %wv = tfm.weight {name = "v"} : tensor<16x16xf32>
  %q = tfm.linear %x, %wq : (tensor<4x16xf32>, tensor<16x16xf32>) -> tensor<4x16xf32>
  %k = tfm.linear %x, %wk : (tensor<4x16xf32>, tensor<16x16xf32>) -> tensor<4x16xf32>
  %v = tfm.linear %x, %wv : (tensor<4x16xf32>, tensor<16x16xf32>) -> tensor<4x16xf32>
  %q4 = tfm.reshape %q : (tensor<4x16xf32>) -> tensor<4x2x8xf32>
  %k4 = tfm.reshape %k : (tensor<4x16xf32>) -> tensor<4x2x8xf32>
  %v4 = tfm.reshape %v : (tensor<4x16xf32>) -> tensor<4x2x8xf32>
  %qh = tfm.transpose %q4 {perm = [1 : i64, 0 : i64, 2 : i64]} : (tensor<4x2x8xf32>) -> tensor<2x4x8xf32>
  %kh = tfm.transpose %k4 {perm = [1 : i64, 0 : i64, 2 : i64]} : (tensor<4x2x8xf32>) -> tensor<2x4x8xf32>
  %vh = tfm.transpose %v4 {perm = [1 : i64, 0 : i64, 2 : i64]} : (tensor<4x2x8xf32>) -> tensor<2x4x8xf32>
  %qb = tfm.reshape %qh : (tensor<2x4x8xf32>) -> tensor<1x2x4x8xf32>
  %kb = tfm.reshape %kh : (tensor<2x4x8xf32>) -> tensor<1x2x4x8xf32>
  %vb = tfm.reshape %vh : (tensor<2x4x8xf32>) -> tensor<1x2x4x8xf32>
  %c2 = tfm.index_copy %cache, %slots, %kb {dim = 2 : i64} : (tensor<1x2x8x8xf32>, tensor<4xi64>, tensor<1x2x4x8xf32>) -> tensor<1x2x8x8xf32>
  %a = tfm.attention %qb, %kb, %vb {causal = true, scale = 0.35355339059327379 : f64} : (tensor<1x2x4x8xf32>, tensor<1x2x4x8xf32>, tensor<1x2x4x8xf32>) -> tensor<1x2x4x8xf32>
  %a3 = tfm.reshape %a : (tensor<1x2x4x8xf32>) -> tensor<2x4x8xf32>
  %at = tfm.transpose %a3 {perm = [1 : i64, 0 : i64, 2 : i64]} : (tensor<2x4x8xf32>) -> tensor<4x2x8xf32>
  %a2 = tfm.reshape %at : (tensor<4x2x8xf32>) -> tensor<4x16xf32>
  %wo = tfm.weight {name = "o"} : tensor<16x16xf32>
  %o = tfm.linear %a2, %wo : (tensor<4x16xf32>, tensor<16x16xf32>) -> tensor<4x16xf32>
  %h = tfm.binary %x, %o {fn = "add"} : (tensor<4x16xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
  %wh = tfm.weight {name = "head"} : tensor<10x16xf32>
  %logits = tfm.linear %h, %wh : (tensor<4x16xf32>, tensor<10x16xf32>) -> tensor<4x10xf32>
  func.return %logits, %c2 : tensor<4x10xf32>, tensor<1x2x8x8xf32>
}

// Heads that do not divide over the chips are an error, not a silent replication.
// RUN: not tasic-opt %s -p "shard-tp{chips=4}" 2>&1 | filecheck %s --check-prefix=HEADS
// HEADS: tensor parallelism over 4 chips needs the attention heads to divide evenly, but the model has 2 query and 2 key/value heads
