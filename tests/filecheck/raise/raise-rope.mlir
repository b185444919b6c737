// RUN: tasic-opt %s -p raise-rope | filecheck %s
// raise-rope: x * cos + concat(-x[..., D/2:], x[..., :D/2]) * sin -> tfm.rope, whatever the order of
// the add's and the multiplications' operands; cos and sin broadcast to x.

// Hugging Face's apply_rotary_pos_emb on q [B, H, S, D] with cos / sin [1, 1, S, D].
// CHECK-LABEL: func.func @hf_query
// CHECK-NEXT:    %y = tfm.rope %q, %cos, %sin {loc = "attn:add"} : (tensor<1x4x8x16xf32>, tensor<1x1x8x16xf32>, tensor<1x1x8x16xf32>) -> tensor<1x4x8x16xf32>
// CHECK-NEXT:    func.return %y
func.func @hf_query(%q: tensor<1x4x8x16xf32>, %cos: tensor<1x1x8x16xf32>, %sin: tensor<1x1x8x16xf32>) -> tensor<1x4x8x16xf32> {
  %a = tfm.binary %q, %cos {fn = "mul"} : (tensor<1x4x8x16xf32>, tensor<1x1x8x16xf32>) -> tensor<1x4x8x16xf32>
  %lo = tfm.slice %q {dim = 3 : i64, start = 0 : i64, end = 8 : i64, step = 1 : i64} : (tensor<1x4x8x16xf32>) -> tensor<1x4x8x8xf32>
  %hi = tfm.slice %q {dim = 3 : i64, start = 8 : i64, end = 16 : i64, step = 1 : i64} : (tensor<1x4x8x16xf32>) -> tensor<1x4x8x8xf32>
  %n = tfm.unary %hi {fn = "neg"} : (tensor<1x4x8x8xf32>) -> tensor<1x4x8x8xf32>
  %r = tfm.concat %n, %lo {dim = 3 : i64} : (tensor<1x4x8x8xf32>, tensor<1x4x8x8xf32>) -> tensor<1x4x8x16xf32>
  %b = tfm.binary %r, %sin {fn = "mul"} : (tensor<1x4x8x16xf32>, tensor<1x1x8x16xf32>) -> tensor<1x4x8x16xf32>
  %y = tfm.binary %a, %b {loc = "attn:add", fn = "add"} : (tensor<1x4x8x16xf32>, tensor<1x4x8x16xf32>) -> tensor<1x4x8x16xf32>
  func.return %y : tensor<1x4x8x16xf32>
}

// Tokens first, [T, H, D] with tables [T, 1, D]; operands of the add and the products swapped.
// CHECK-LABEL: func.func @tokens_first_swapped
// CHECK-NEXT:    %y = tfm.rope %x, %cos, %sin : (tensor<6x2x8xf32>, tensor<6x1x8xf32>, tensor<6x1x8xf32>) -> tensor<6x2x8xf32>
// CHECK-NEXT:    func.return %y
func.func @tokens_first_swapped(%x: tensor<6x2x8xf32>, %cos: tensor<6x1x8xf32>, %sin: tensor<6x1x8xf32>) -> tensor<6x2x8xf32> {
  %hi = tfm.slice %x {dim = 2 : i64, start = 4 : i64, end = 8 : i64, step = 1 : i64} : (tensor<6x2x8xf32>) -> tensor<6x2x4xf32>
  %n = tfm.unary %hi {fn = "neg"} : (tensor<6x2x4xf32>) -> tensor<6x2x4xf32>
  %lo = tfm.slice %x {dim = 2 : i64, start = 0 : i64, end = 4 : i64, step = 1 : i64} : (tensor<6x2x8xf32>) -> tensor<6x2x4xf32>
  %r = tfm.concat %n, %lo {dim = 2 : i64} : (tensor<6x2x4xf32>, tensor<6x2x4xf32>) -> tensor<6x2x8xf32>
  %b = tfm.binary %sin, %r {fn = "mul"} : (tensor<6x1x8xf32>, tensor<6x2x8xf32>) -> tensor<6x2x8xf32>
  %a = tfm.binary %cos, %x {fn = "mul"} : (tensor<6x1x8xf32>, tensor<6x2x8xf32>) -> tensor<6x2x8xf32>
  %y = tfm.binary %b, %a {fn = "add"} : (tensor<6x2x8xf32>, tensor<6x2x8xf32>) -> tensor<6x2x8xf32>
  func.return %y : tensor<6x2x8xf32>
}

// Not a rotation: the halves are swapped the other way (concat(lo, -hi)); left alone.
// CHECK-LABEL: func.func @not_rotate_half
// CHECK-NOT:     tfm.rope
// CHECK:         func.return
func.func @not_rotate_half(%x: tensor<6x8xf32>, %cos: tensor<6x8xf32>, %sin: tensor<6x8xf32>) -> tensor<6x8xf32> {
  %a = tfm.binary %x, %cos {fn = "mul"} : (tensor<6x8xf32>, tensor<6x8xf32>) -> tensor<6x8xf32>
  %lo = tfm.slice %x {dim = 1 : i64, start = 0 : i64, end = 4 : i64, step = 1 : i64} : (tensor<6x8xf32>) -> tensor<6x4xf32>
  %hi = tfm.slice %x {dim = 1 : i64, start = 4 : i64, end = 8 : i64, step = 1 : i64} : (tensor<6x8xf32>) -> tensor<6x4xf32>
  %n = tfm.unary %hi {fn = "neg"} : (tensor<6x4xf32>) -> tensor<6x4xf32>
  %r = tfm.concat %lo, %n {dim = 1 : i64} : (tensor<6x4xf32>, tensor<6x4xf32>) -> tensor<6x8xf32>
  %b = tfm.binary %r, %sin {fn = "mul"} : (tensor<6x8xf32>, tensor<6x8xf32>) -> tensor<6x8xf32>
  %y = tfm.binary %a, %b {fn = "add"} : (tensor<6x8xf32>, tensor<6x8xf32>) -> tensor<6x8xf32>
  func.return %y : tensor<6x8xf32>
}
