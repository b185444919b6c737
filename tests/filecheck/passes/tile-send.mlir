// RUN: tasic-opt %s -p 'tile{target=tiny}' | filecheck %s
// tfm.send (pipeline parallelism) becomes a kernel that loads row tiles of the hidden states and sends
// them, in the HBM dtype, over the links into the next stage's buffer (the output `hidden_out`).

func.func @main(%x: tensor<8x32xf32>) -> tensor<8x32xf32> attributes {tfm.input_names = ["hidden"], tfm.output_names = ["hidden_out"]} {
  %e = tfm.unary %x {fn = "exp", loc = "act"} : (tensor<8x32xf32>) -> tensor<8x32xf32>
  %y = tfm.send %e {loc = "pipeline:send0"} : (tensor<8x32xf32>) -> tensor<8x32xf32>
  func.return %y : tensor<8x32xf32>
}

// CHECK-DAG:  %[[Y:.*]] = tile.hbm {name = "hidden_out", kind = "output"} : memref<8x32xf32, "hbm">
// CHECK:      tile.kernel "pipeline:send0" {
// CHECK-NEXT: %[[T:.*]] = tile.sram {offset = -1 : i64} : memref<8x32xf32, "sram">
// CHECK-NEXT: tile.dma_load %{{.*}}, %[[T]] {rows = 8 : i64, cols = 32 : i64
// CHECK-NEXT: tile.link_send %[[T]], %[[Y]] {rows = 8 : i64, cols = 32 : i64, offset = 0 : i64
// CHECK-NOT:  tfm.
