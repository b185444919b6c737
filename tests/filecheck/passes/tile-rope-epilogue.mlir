// RUN: tasic-opt %s -p 'tile{target=tiny}' | filecheck %s
// tile: a fused q/k/v linear whose q and k columns (a prefix: 2 + 1 heads of 8) feed ropes with the same
// cos and sin rotates them in its output tile (tile.rope) before the one store; no rope kernel, and the
// ropes' results are the linear's buffer (the outputs copy their columns from it). v is not rotated.

func.func @main(%x: tensor<20x16xf32>, %c: tensor<20x8xf32>, %s: tensor<20x8xf32>) -> (tensor<20x16xf32>, tensor<20x8xf32>, tensor<20x8xf32>) attributes {tfm.input_names = ["x", "cos", "sin"], tfm.output_names = ["q", "k", "v"]} {
  %cos = tfm.reshape %c : (tensor<20x8xf32>) -> tensor<20x1x8xf32>
  %sin = tfm.reshape %s : (tensor<20x8xf32>) -> tensor<20x1x8xf32>
  %w = tfm.weight {name = "qkv.weight"} : tensor<32x16xf32>
  %y = tfm.linear %x, %w {loc = "qkv"} : (tensor<20x16xf32>, tensor<32x16xf32>) -> tensor<20x32xf32>
  %q = tfm.slice %y {dim = 1, start = 0, end = 16, step = 1} : (tensor<20x32xf32>) -> tensor<20x16xf32>
  %k = tfm.slice %y {dim = 1, start = 16, end = 24, step = 1} : (tensor<20x32xf32>) -> tensor<20x8xf32>
  %v = tfm.slice %y {dim = 1, start = 24, end = 32, step = 1} : (tensor<20x32xf32>) -> tensor<20x8xf32>
  %q3 = tfm.reshape %q : (tensor<20x16xf32>) -> tensor<20x2x8xf32>
  %k3 = tfm.reshape %k : (tensor<20x8xf32>) -> tensor<20x1x8xf32>
  %qr = tfm.rope %q3, %cos, %sin {loc = "rope"} : (tensor<20x2x8xf32>, tensor<20x1x8xf32>, tensor<20x1x8xf32>) -> tensor<20x2x8xf32>
  %kr = tfm.rope %k3, %cos, %sin {loc = "rope"} : (tensor<20x1x8xf32>, tensor<20x1x8xf32>, tensor<20x1x8xf32>) -> tensor<20x1x8xf32>
  %qo = tfm.reshape %qr : (tensor<20x2x8xf32>) -> tensor<20x16xf32>
  %ko = tfm.reshape %kr : (tensor<20x1x8xf32>) -> tensor<20x8xf32>
  func.return %qo, %ko, %v : tensor<20x16xf32>, tensor<20x8xf32>, tensor<20x8xf32>
}

// CHECK:      %[[Y:.*]] = tile.hbm {name = "t1", kind = "temp"} : memref<20x32xf32, "hbm">
// CHECK:      tile.kernel "qkv" {
// CHECK:      tile.matmul %{{.*}}, %{{.*}}, %[[ACC:.*]] {m = 20 : i64, n = 32 : i64, k = 16 : i64, accumulate = 0 : i64}
// CHECK-NEXT: tile.dma_load %{{.*}}, %[[T:.*]] {rows = 20 : i64, cols = 8 : i64, offset = 0 : i64, {{.*}} sram_offset = 0 : i64}
// CHECK-NEXT: tile.dma_load %{{.*}}, %[[T]] {rows = 20 : i64, cols = 8 : i64, offset = 0 : i64, {{.*}} sram_offset = 160 : i64}
// CHECK-NEXT: tile.rope %[[ACC]], %[[T]], %[[ACC]] {rows = 20 : i64, cols = 32 : i64, head_dim = 8 : i64, roped = 24 : i64}
// CHECK-NEXT: tile.dma_store %[[ACC]], %[[Y]]
// CHECK-NEXT: }
// CHECK-NOT:  tile.kernel "rope"
// CHECK:      tile.kernel "output q" {
// CHECK:      tile.dma_load %[[Y]], %{{.*}} {rows = 20 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 32 : i64
// CHECK:      tile.kernel "output k" {
// CHECK:      tile.dma_load %[[Y]], %{{.*}} {rows = 20 : i64, cols = 8 : i64, offset = 16 : i64, row_stride = 32 : i64
