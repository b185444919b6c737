// RUN: tasic-opt %s -p insert-sync | filecheck %s
// RUN: tasic-opt %s -p 'insert-sync{kernel_barriers=true}' | filecheck %s --check-prefix=BARRIER
// Semaphores: forward tokens in loop bodies 0-19, loop-carried 20-39, top level 40-59
// (kind * 20 + producer * 4 + index of the consumer among the other engines).

// @loop: a token from the loading DMA to the VPU inside the loop, and one loop-carried token from
// the store back to the next iteration's load (pre-signalled before the loop, drained after it).
// The carried VPU -> load token (the load overwrites what the VPU read) is implied: the store
// waited for the VPU. So is the carried store -> VPU one: the VPU waits for this iteration's load.

func.func @loop() {
  %x = tile.hbm {name = "x", kind = "input"} : memref<8x16xf32, "hbm">
  %y = tile.hbm {name = "y", kind = "output"} : memref<8x16xf32, "hbm">
  tile.kernel "k" {
    %a = tile.sram {offset = 0 : i64} : memref<2x16xf32, "sram">
    tile.loop 4 : i64 {
      tile.dma_load %x, %a {rows = 2 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [32 : i64], sram_offset = 0 : i64} : memref<8x16xf32, "hbm">, memref<2x16xf32, "sram">
      tile.unary %a, %a {fn = "exp", rows = 2 : i64, cols = 16 : i64} : memref<2x16xf32, "sram">, memref<2x16xf32, "sram">
      tile.dma_store %a, %y {rows = 2 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [32 : i64], sram_offset = 0 : i64} : memref<2x16xf32, "sram">, memref<8x16xf32, "hbm">
    }
  }
  func.return
}

// CHECK-LABEL: func.func @loop
// CHECK:      tile.signal {engine = "dma_store", sem = 24 : i64}
// CHECK-NEXT: tile.loop 4 : i64 {
// CHECK-NEXT:   tile.wait {engine = "dma_load", sem = 24 : i64}
// CHECK-NEXT:   tile.dma_load
// CHECK-NEXT:   tile.signal {engine = "dma_load", sem = 2 : i64}
// CHECK-NEXT:   tile.wait {engine = "vpu", sem = 2 : i64}
// CHECK-NEXT:   tile.unary
// CHECK-NEXT:   tile.signal {engine = "vpu", sem = 13 : i64}
// CHECK-NEXT:   tile.wait {engine = "dma_store", sem = 13 : i64}
// CHECK-NEXT:   tile.dma_store
// CHECK-NEXT:   tile.signal {engine = "dma_store", sem = 24 : i64}
// CHECK-NEXT: }
// CHECK-NEXT: tile.wait {engine = "dma_load", sem = 24 : i64}
// CHECK-NEXT: }

// @implied: the matmul reads the loaded tile and the VPU's result. The VPU waited for the load,
// so the MXU waits for the VPU only: no load -> MXU token (it would be sem 41).

func.func @implied() {
  %x = tile.hbm {name = "x", kind = "input"} : memref<16x16xf32, "hbm">
  %y = tile.hbm {name = "y", kind = "output"} : memref<16x16xf32, "hbm">
  tile.kernel "k" {
    %a = tile.sram {offset = 0 : i64} : memref<16x16xf32, "sram">
    %b = tile.sram {offset = 1024 : i64} : memref<16x16xf32, "sram">
    %c = tile.sram {offset = 2048 : i64} : memref<16x16xf32, "sram">
    tile.dma_load %x, %a {rows = 16 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<16x16xf32, "hbm">, memref<16x16xf32, "sram">
    tile.unary %a, %b {fn = "exp", rows = 16 : i64, cols = 16 : i64} : memref<16x16xf32, "sram">, memref<16x16xf32, "sram">
    tile.matmul %a, %b, %c {m = 16 : i64, n = 16 : i64, k = 16 : i64, accumulate = 0 : i64} : memref<16x16xf32, "sram">, memref<16x16xf32, "sram">, memref<16x16xf32, "sram">
    tile.dma_store %c, %y {rows = 16 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<16x16xf32, "sram">, memref<16x16xf32, "hbm">
  }
  func.return
}

// CHECK-LABEL: func.func @implied
// CHECK:      tile.dma_load
// CHECK-NEXT: tile.signal {engine = "dma_load", sem = 42 : i64}
// CHECK-NEXT: tile.wait {engine = "vpu", sem = 42 : i64}
// CHECK-NEXT: tile.unary
// CHECK-NEXT: tile.signal {engine = "vpu", sem = 54 : i64}
// CHECK-NEXT: tile.wait {engine = "mxu", sem = 54 : i64}
// CHECK-NEXT: tile.matmul
// CHECK-NEXT: tile.signal {engine = "mxu", sem = 49 : i64}
// CHECK-NEXT: tile.wait {engine = "dma_store", sem = 49 : i64}
// CHECK-NEXT: tile.dma_store
// CHECK-NEXT: }

// @independent: two kernels that share neither HBM buffers nor SRAM bytes get no token between
// them and overlap. With kernel_barriers, a barrier through the load DMA separates them.

func.func @independent() {
  %x = tile.hbm {name = "x", kind = "input"} : memref<2x16xf32, "hbm">
  %y = tile.hbm {name = "y", kind = "output"} : memref<2x16xf32, "hbm">
  %z = tile.hbm {name = "z", kind = "input"} : memref<2x16xf32, "hbm">
  %w = tile.hbm {name = "w", kind = "output"} : memref<2x16xf32, "hbm">
  tile.kernel "a" {
    %a = tile.sram {offset = 0 : i64} : memref<2x16xf32, "sram">
    tile.dma_load %x, %a {rows = 2 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<2x16xf32, "hbm">, memref<2x16xf32, "sram">
    tile.dma_store %a, %y {rows = 2 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<2x16xf32, "sram">, memref<2x16xf32, "hbm">
  }
  tile.kernel "b" {
    %b = tile.sram {offset = 128 : i64} : memref<2x16xf32, "sram">
    tile.dma_load %z, %b {rows = 2 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<2x16xf32, "hbm">, memref<2x16xf32, "sram">
    tile.dma_store %b, %w {rows = 2 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<2x16xf32, "sram">, memref<2x16xf32, "hbm">
  }
  func.return
}

// CHECK-LABEL: func.func @independent
// CHECK:      tile.kernel "a" {
// CHECK:        tile.dma_load
// CHECK-NEXT:   tile.signal {engine = "dma_load", sem = 40 : i64}
// CHECK-NEXT:   tile.wait {engine = "dma_store", sem = 40 : i64}
// CHECK-NEXT:   tile.dma_store
// CHECK-NEXT: }
// CHECK-NEXT: tile.kernel "b" {
// CHECK-NEXT:   %b = tile.sram
// CHECK-NEXT:   tile.dma_load
// CHECK-NEXT:   tile.signal {engine = "dma_load", sem = 40 : i64}
// CHECK-NEXT:   tile.wait {engine = "dma_store", sem = 40 : i64}
// CHECK-NEXT:   tile.dma_store
// CHECK-NEXT: }

// BARRIER-LABEL: func.func @independent
// BARRIER:      tile.dma_store
// BARRIER-NEXT: tile.signal {engine = "dma_store", sem = 4 : i64}
// BARRIER-NEXT: }
// BARRIER-NEXT: tile.kernel "b" {
// BARRIER-NEXT:   %b = tile.sram
// BARRIER-NEXT:   tile.wait {engine = "dma_load", sem = 4 : i64}
// BARRIER-NEXT:   tile.signal {engine = "dma_load", sem = 0 : i64}
// BARRIER-NEXT:   tile.wait {engine = "dma_store", sem = 0 : i64}
// BARRIER-NEXT:   tile.dma_load

// @dependent: kernel "b" reads the HBM buffer kernel "a" stores in a loop, and overwrites the SRAM
// bytes a's VPU fills and a's store reads. One token, signalled by the store DMA after a's loop and
// waited for by b's load before its first op: the store waited for the VPU's last fill.

func.func @dependent() {
  %t = tile.hbm {name = "t", kind = "temp"} : memref<8x16xf32, "hbm">
  %y = tile.hbm {name = "y", kind = "output"} : memref<8x16xf32, "hbm">
  tile.kernel "a" {
    %a = tile.sram {offset = 0 : i64} : memref<2x16xf32, "sram">
    tile.loop 4 : i64 {
      tile.fill %a {value = 1.000000e+00 : f64, rows = 2 : i64, cols = 16 : i64} : memref<2x16xf32, "sram">
      tile.dma_store %a, %t {rows = 2 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [32 : i64], sram_offset = 0 : i64} : memref<2x16xf32, "sram">, memref<8x16xf32, "hbm">
    }
  }
  tile.kernel "b" {
    %b = tile.sram {offset = 0 : i64} : memref<8x16xf32, "sram">
    tile.dma_load %t, %b {rows = 8 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<8x16xf32, "hbm">, memref<8x16xf32, "sram">
    tile.dma_store %b, %y {rows = 8 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<8x16xf32, "sram">, memref<8x16xf32, "hbm">
  }
  func.return
}

// CHECK-LABEL: func.func @dependent
// CHECK:      tile.kernel "a" {
// CHECK-NEXT:   %a = tile.sram
// CHECK-NEXT:   tile.signal {engine = "dma_store", sem = 26 : i64}
// CHECK-NEXT:   tile.loop 4 : i64 {
// CHECK-NEXT:     tile.wait {engine = "vpu", sem = 26 : i64}
// CHECK-NEXT:     tile.fill
// CHECK-NEXT:     tile.signal {engine = "vpu", sem = 13 : i64}
// CHECK-NEXT:     tile.wait {engine = "dma_store", sem = 13 : i64}
// CHECK-NEXT:     tile.dma_store
// CHECK-NEXT:     tile.signal {engine = "dma_store", sem = 26 : i64}
// CHECK-NEXT:   }
// CHECK-NEXT:   tile.signal {engine = "dma_store", sem = 44 : i64}
// CHECK-NEXT:   tile.wait {engine = "vpu", sem = 26 : i64}
// CHECK-NEXT: }
// CHECK-NEXT: tile.kernel "b" {
// CHECK-NEXT:   %b = tile.sram
// CHECK-NEXT:   tile.wait {engine = "dma_load", sem = 44 : i64}
// CHECK-NEXT:   tile.dma_load
// CHECK-NEXT:   tile.signal {engine = "dma_load", sem = 40 : i64}
// CHECK-NEXT:   tile.wait {engine = "dma_store", sem = 40 : i64}
// CHECK-NEXT:   tile.dma_store
// CHECK-NEXT: }

// @rows: HBM dependencies are byte ranges. Kernel "a" stores rows 0-3 of %t in a loop (its window's
// range over all iterations), "b" loads rows 4-7 (disjoint: no token, its load may run before a's
// stores) and "c" loads rows 3-4, which a's last iteration wrote (a store -> load token, sem 44).

func.func @rows() {
  %t = tile.hbm {name = "t", kind = "temp"} : memref<8x16xf32, "hbm">
  tile.kernel "a" {
    %a = tile.sram {offset = 0 : i64} : memref<2x16xf32, "sram">
    tile.loop 2 : i64 {
      tile.dma_store %a, %t {rows = 2 : i64, cols = 16 : i64, offset = 0 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [32 : i64], sram_offset = 0 : i64} : memref<2x16xf32, "sram">, memref<8x16xf32, "hbm">
    }
  }
  tile.kernel "b" {
    %b = tile.sram {offset = 1024 : i64} : memref<4x16xf32, "sram">
    tile.dma_load %t, %b {rows = 4 : i64, cols = 16 : i64, offset = 64 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<8x16xf32, "hbm">, memref<4x16xf32, "sram">
  }
  tile.kernel "c" {
    %c = tile.sram {offset = 2048 : i64} : memref<2x16xf32, "sram">
    tile.dma_load %t, %c {rows = 2 : i64, cols = 16 : i64, offset = 48 : i64, row_stride = 16 : i64, col_stride = 1 : i64, loop_strides = [], sram_offset = 0 : i64} : memref<8x16xf32, "hbm">, memref<2x16xf32, "sram">
  }
  func.return
}

// CHECK-LABEL: func.func @rows
// CHECK:      tile.loop 2 : i64 {
// CHECK-NEXT:   tile.dma_store
// CHECK-NEXT: }
// CHECK-NEXT: tile.signal {engine = "dma_store", sem = 44 : i64}
// CHECK-NEXT: }
// CHECK-NEXT: tile.kernel "b" {
// CHECK-NEXT:   %b = tile.sram
// CHECK-NEXT:   tile.dma_load
// CHECK-NEXT: }
// CHECK-NEXT: tile.kernel "c" {
// CHECK-NEXT:   %c = tile.sram
// CHECK-NEXT:   tile.wait {engine = "dma_load", sem = 44 : i64}
// CHECK-NEXT:   tile.dma_load
