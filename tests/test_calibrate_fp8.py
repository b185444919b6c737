"""Static FP8 scales: calibrate a torch model on sample inputs, compile with them, run on the simulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tasic.backend.target import load_target
from tasic.compiler import compile_module
from tasic.frontend.calibrate import calibrate_linears, write_calibration
from tasic.frontend.torch_import import import_module
from tasic.isa_sim import simulate


class TiedLM(torch.nn.Module):
    """Embedding, an MLP, and an output layer tied to the embedding table (like SmolLM2's lm_head)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 32)
        self.up = torch.nn.Linear(32, 64)
        self.down = torch.nn.Linear(64, 32, bias=False)
        self.head = torch.nn.Linear(32, 50, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids)
        return self.head(h + self.down(torch.relu(self.up(h))))


def test_calibrated_scales_compile_and_run(tmp_path: Path) -> None:
    """Keys are the importer's weight names (a tied weight under its first name); the static FP8 model is close."""
    torch.manual_seed(0)
    model = TiedLM().eval()
    samples = [torch.randint(0, 50, (1, 8)) for _ in range(4)]
    seen: dict[str, list[torch.Tensor]] = {"up": [], "down": [], "head": []}
    hooks = [
        getattr(model, name).register_forward_pre_hook(lambda _m, args, name=name: seen[name].append(args[0]))
        for name in seen
    ]
    amax = calibrate_linears(model, lambda: [model(ids) for ids in samples])
    for hook in hooks:
        hook.remove()
    assert set(amax) == {"up.weight", "down.weight", "embed.weight"}
    for name, key in (("up", "up.weight"), ("down", "down.weight"), ("head", "embed.weight")):
        assert amax[key] == max(float(x.abs().max()) for x in seen[name])

    ids = torch.randint(0, 50, (1, 8))
    with torch.no_grad():
        expected = model(ids).numpy()
    graph = import_module(model, {"ids": ids})
    assert set(amax) <= set(graph.weights), "calibration keys must name the imported weights"
    path = tmp_path / "scales.json"
    write_calibration(amax, path)
    target = load_target("tiny")
    outputs = {}
    for mode, calibration in (("static", str(path)), ("dynamic", None)):
        graph = import_module(model, {"ids": ids})
        binary = compile_module(graph.module, graph.weights, target, "f32", quantize="fp8", calibration=calibration)
        result = simulate(binary, target, {graph.input_names[0]: ids.numpy()})
        outputs[mode] = next(iter(result.outputs.values()))
    for mode, got in outputs.items():
        relative = np.linalg.norm(got - expected) / np.linalg.norm(expected)
        assert 1e-4 < relative < 0.08, f"{mode}: relative RMS error {relative:.4f} against torch f32"
    assert not np.array_equal(outputs["static"], outputs["dynamic"])
