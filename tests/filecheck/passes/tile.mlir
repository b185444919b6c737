// RUN: tasic-opt %s -p 'tile{target=tiny}' | filecheck %s
// tile turns tfm ops into kernels: layout ops become strided views (no kernel),
// linear weights are stored transposed, loops stay rolled.

func.func @main(%x: tensor<2x8x32xf32>) -> tensor<2x32x64xf32> attributes {tfm.input_names = ["x"], tfm.output_names = ["y"]} {
  %w = tfm.weight {name = "fc.weight"} : tensor<64x32xf32>
  %b = tfm.weight {name = "fc.bias"} : tensor<64xf32>
  %t = tfm.transpose %x {perm = [0, 2, 1]} : (tensor<2x8x32xf32>) -> tensor<2x32x8xf32>
  %e = tfm.unary %t {fn = "exp", loc = "act"} : (tensor<2x32x8xf32>) -> tensor<2x32x8xf32>
  %r = tfm.reshape %e : (tensor<2x32x8xf32>) -> tensor<2x32x8xf32>
  %s = tfm.slice %r {dim = 2, start = 0, end = 8, step = 1} : (tensor<2x32x8xf32>) -> tensor<2x32x8xf32>
  %m = tfm.matmul %s, %x : (tensor<2x32x8xf32>, tensor<2x8x32xf32>) -> tensor<2x32x32xf32>
  %y = tfm.linear %m, %w, %b {loc = "fc"} : (tensor<2x32x32xf32>, tensor<64x32xf32>, tensor<64xf32>) -> tensor<2x32x64xf32>
  func.return %y : tensor<2x32x64xf32>
}

// CHECK:      func.func @main() attributes {tfm.input_names = ["x"], tfm.output_names = ["y"]} {
// CHECK-DAG:  %[[X:.*]] = tile.hbm {name = "x", kind = "input"} : memref<2x8x32xf32, "hbm">
// CHECK-DAG:  %[[W:.*]] = tile.hbm {name = "fc.weight", kind = "weight", transpose = 1 : i64} : memref<32x64xf32, "hbm">
// CHECK-DAG:  %[[Y:.*]] = tile.hbm {name = "y", kind = "output"} : memref<2x32x64xf32, "hbm">
// The transposed input is read with a column stride of 32 elements.
// CHECK:      tile.kernel "act" {
// CHECK:      tile.loop 2 : i64 {
// CHECK-NEXT: tile.dma_load %[[X]], %{{.*}} {rows = 32 : i64, cols = 8 : i64, offset = 0 : i64, row_stride = 1 : i64, col_stride = 32 : i64, loop_strides = [256 : i64]
// CHECK-NEXT: tile.unary %{{.*}} {fn = "exp"
// CHECK:      tile.kernel "tfm.matmul" {
// CHECK:      tile.matmul
// CHECK:      tile.kernel "fc" {
// CHECK:      tile.dma_load %[[W]]
// CHECK:      tile.matmul
// CHECK:      tile.binary {{.*}} {fn = "add", broadcast = "col"
// CHECK:      tile.dma_store {{.*}}, %[[Y]]
// CHECK-NOT:  tfm.
