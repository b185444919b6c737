"""onnx's backend node tests of the supported operators, run on the simulator (target `tiny`, f32).

The tests come from `onnx.backend.test.BackendTest` (generated in-process),
restricted to the op types in `tasic.frontend.onnx_backend.CONFORMANCE_TESTS`
and their `_expanded` variants. A model the backend does not handle (element
types other than float32 at the boundary, operators it does not map,
zero-size tensors) is a skip; everything else must match onnx's expected
outputs. Integer inputs (axes, shapes, indices) are compile-time constants.
"""

from __future__ import annotations

from tasic.frontend.onnx_backend import conformance_test_case

OnnxConformanceTest = conformance_test_case()
