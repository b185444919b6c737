// RUN: tasic-opt %s -p 'decode-buckets{smallest=16}' | filecheck %s
// decode-buckets clones @decode per context bucket; smaller buckets read a
// prefix of the KV cache and of the key mask.

func.func @decode(%q: tensor<1x2x1x8xf32>, %k: tensor<1x2x64x8xf32>, %m: tensor<1x1x1x64xi1>) -> tensor<1x2x1x8xf32> {
  %o = tfm.attention %q, %k, %k, %m {causal = false, scale = 0.35 : f64} : (tensor<1x2x1x8xf32>, tensor<1x2x64x8xf32>, tensor<1x2x64x8xf32>, tensor<1x1x1x64xi1>) -> tensor<1x2x1x8xf32>
  func.return %o : tensor<1x2x1x8xf32>
}

// CHECK-LABEL: func.func @decode_16(
// CHECK:       %[[K:.*]] = tfm.slice %k {dim = 2 : i64, start = 0 : i64, end = 16 : i64, step = 1 : i64} : (tensor<1x2x64x8xf32>) -> tensor<1x2x16x8xf32>
// CHECK:       %[[M:.*]] = tfm.slice %m {dim = 3 : i64, start = 0 : i64, end = 16 : i64, step = 1 : i64} : (tensor<1x1x1x64xi1>) -> tensor<1x1x1x16xi1>
// CHECK:       tfm.attention %q, %[[K]], %{{.*}}, %[[M]]
// CHECK-LABEL: func.func @decode_32(
// CHECK:       end = 32 : i64
// CHECK-LABEL: func.func @decode_64(
// CHECK-NOT:   tfm.slice
// CHECK:       tfm.attention %q, %k, %k, %m
// CHECK-NOT:   func.func @decode(
