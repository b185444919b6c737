// RUN: tasic-opt %s -p "prefetch-weights{target=tiny}" | filecheck %s
// prefetch-weights: a kernel's leading weight loads move into the kernel before it, into an alias of
// their tile at the same offset.
// - "next" loads 10 rows of %w before its matmul; "k_loop" before it has a top-level loop of 4
//   iterations with loads and a product: 2 rows per iteration (loop strides 2 rows of HBM, 2 rows of
//   SRAM), the 2 rows left right after the loop.
// - "after_straight" loads %w too; "next" before it has no loop: the load goes after the last of the
//   five loads in its second half (of ten after the product) (at least SPREAD = 4 of them per moved load), which its exponentials
//   leave the DMA time for.
// - "overlapping" loads into bytes "after_straight" uses: it keeps its load.

func.func @main() {
  %x = tile.hbm {name = "x", kind = "input"} : memref<64x16xf32, "hbm">
  %w = tile.hbm {name = "w", kind = "weight"} : memref<10x16xf32, "hbm">
  tile.kernel "k_loop" {
    %a = tile.sram {offset = 0 : i64} : memref<16x16xf32, "sram">
    %c = tile.sram {offset = 1024 : i64} : memref<16x16xf32, "sram">
    tile.loop 4 : i64 {
      tile.dma_load %x, %a {rows = 16 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [256 : i64], sram_offset = 0 : i64} : memref<64x16xf32, "hbm">, memref<16x16xf32, "sram">
      tile.matmul %a, %a, %c {m = 16 : i64, n = 16 : i64, k = 16 : i64, accumulate = 1 : i64} : memref<16x16xf32, "sram">, memref<16x16xf32, "sram">, memref<16x16xf32, "sram">
    }
  }
  tile.kernel "next" {
    %wt = tile.sram {offset = 4096 : i64} : memref<10x16xf32, "sram">
    %b = tile.sram {offset = 8192 : i64} : memref<16x16xf32, "sram">
    tile.dma_load %w, %wt {rows = 10 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<10x16xf32, "hbm">, memref<10x16xf32, "sram">
    tile.dma_load %x, %b {rows = 16 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<64x16xf32, "hbm">, memref<16x16xf32, "sram">
    tile.matmul %b, %wt, %b {m = 16 : i64, n = 16 : i64, k = 10 : i64, accumulate = 0 : i64} : memref<16x16xf32, "sram">, memref<10x16xf32, "sram">, memref<16x16xf32, "sram">
    tile.dma_load %x, %b {rows = 16 : i64, cols = 16 : i64, offset = 256 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<64x16xf32, "hbm">, memref<16x16xf32, "sram">
    tile.dma_load %x, %b {rows = 16 : i64, cols = 16 : i64, offset = 512 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<64x16xf32, "hbm">, memref<16x16xf32, "sram">
    tile.dma_load %x, %b {rows = 16 : i64, cols = 16 : i64, offset = 768 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<64x16xf32, "hbm">, memref<16x16xf32, "sram">
    tile.dma_load %x, %b {rows = 16 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<64x16xf32, "hbm">, memref<16x16xf32, "sram">
    tile.dma_load %x, %b {rows = 16 : i64, cols = 16 : i64, offset = 256 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<64x16xf32, "hbm">, memref<16x16xf32, "sram">
    tile.dma_load %x, %b {rows = 16 : i64, cols = 16 : i64, offset = 512 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<64x16xf32, "hbm">, memref<16x16xf32, "sram">
    tile.dma_load %x, %b {rows = 16 : i64, cols = 16 : i64, offset = 768 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<64x16xf32, "hbm">, memref<16x16xf32, "sram">
    tile.dma_load %x, %b {rows = 16 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<64x16xf32, "hbm">, memref<16x16xf32, "sram">
    tile.dma_load %x, %b {rows = 16 : i64, cols = 16 : i64, offset = 256 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<64x16xf32, "hbm">, memref<16x16xf32, "sram">
    tile.dma_load %x, %b {rows = 16 : i64, cols = 16 : i64, offset = 512 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<64x16xf32, "hbm">, memref<16x16xf32, "sram">
    tile.unary %b, %b {fn = "exp", rows = 16 : i64, cols = 16 : i64} : memref<16x16xf32, "sram">, memref<16x16xf32, "sram">
    tile.unary %b, %b {fn = "exp", rows = 16 : i64, cols = 16 : i64} : memref<16x16xf32, "sram">, memref<16x16xf32, "sram">
    tile.unary %b, %b {fn = "exp", rows = 16 : i64, cols = 16 : i64} : memref<16x16xf32, "sram">, memref<16x16xf32, "sram">
  }
  tile.kernel "after_straight" {
    %wt2 = tile.sram {offset = 12288 : i64} : memref<10x16xf32, "sram">
    tile.dma_load %w, %wt2 {rows = 10 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<10x16xf32, "hbm">, memref<10x16xf32, "sram">
  }
  tile.kernel "overlapping" {
    %wt3 = tile.sram {offset = 12288 : i64} : memref<10x16xf32, "sram">
    tile.dma_load %w, %wt3 {rows = 10 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<10x16xf32, "hbm">, memref<10x16xf32, "sram">
  }
  func.return
}

// CHECK:      tile.kernel "k_loop" {
// CHECK-NEXT:   %{{.*}} = tile.sram {offset = 4096 : i64} : memref<10x16xf32, "sram">
// CHECK:        tile.loop 4 : i64 {
// CHECK-NEXT:     tile.dma_load %x
// CHECK-NEXT:     tile.matmul
// CHECK-NEXT:     tile.dma_load %w, %{{.*}} {rows = 2 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [32 : i64], sram_offset = 0 : i64, sram_loop_strides = [32 : i64]}
// CHECK-NEXT:   }
// CHECK-NEXT:   tile.dma_load %w, %{{.*}} {rows = 2 : i64, cols = 16 : i64, offset = 128 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 128 : i64}
// CHECK-NEXT: }
// CHECK-NEXT: tile.kernel "next" {
// CHECK-NEXT:   %{{.*}} = tile.sram {offset = 12288 : i64} : memref<10x16xf32, "sram">
// CHECK-NEXT:   %wt = tile.sram {offset = 4096 : i64}
// CHECK-NEXT:   %b = tile.sram {offset = 8192 : i64}
// CHECK-NEXT:   tile.dma_load %x, %b {{.*}}offset = 0 : i64
// CHECK-NEXT:   tile.matmul %b, %wt, %b
// CHECK-NEXT:   tile.dma_load %x, %b {{.*}}offset = 256 : i64
// CHECK-NEXT:   tile.dma_load %x, %b {{.*}}offset = 512 : i64
// CHECK-NEXT:   tile.dma_load %x, %b {{.*}}offset = 768 : i64
// CHECK-NEXT:   tile.dma_load %x, %b {{.*}}offset = 0 : i64
// CHECK-NEXT:   tile.dma_load %x, %b {{.*}}offset = 256 : i64
// CHECK-NEXT:   tile.dma_load %x, %b {{.*}}offset = 512 : i64
// CHECK-NEXT:   tile.dma_load %x, %b {{.*}}offset = 768 : i64
// CHECK-NEXT:   tile.dma_load %x, %b {{.*}}offset = 0 : i64
// CHECK-NEXT:   tile.dma_load %x, %b {{.*}}offset = 256 : i64
// CHECK-NEXT:   tile.dma_load %x, %b {{.*}}offset = 512 : i64
// CHECK-NEXT:   tile.dma_load %w, %{{.*}} {rows = 10 : i64
// CHECK-NEXT:   tile.unary
// CHECK-NEXT:   tile.unary
// CHECK-NEXT:   tile.unary
// CHECK-NEXT: }
// CHECK-NEXT: tile.kernel "after_straight" {
// CHECK-NEXT:   %wt2 = tile.sram {offset = 12288 : i64}
// CHECK-NEXT: }
// CHECK-NEXT: tile.kernel "overlapping" {
// CHECK-NEXT:   %wt3 = tile.sram {offset = 12288 : i64}
// CHECK-NEXT:   tile.dma_load %w, %wt3
