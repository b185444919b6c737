"""Bad input ends in exit code != 0 and one `error:` line, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tasic.backend.target import TARGETS_DIR

TASIC = str(Path(sys.prefix) / "bin" / "tasic")

MODELS = """
import torch


class Mlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16, 32)

    def forward(self, x):
        return torch.softmax(torch.nn.functional.gelu(self.fc(x)), -1)


class Scan(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x):
        return self.proj(x).cumsum(-1)


def mlp():
    torch.manual_seed(0)
    return Mlp().eval(), (torch.randn(4, 16),)


def scan():
    return Scan().eval(), (torch.randn(2, 8),)
"""


def fails_cleanly(*args: str, tool: str = TASIC) -> str:
    """Run the CLI (or `tool`), expect failure with one error line; return that line."""
    result = subprocess.run([tool, *args], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A python file with model factories."""
    path = tmp_path_factory.mktemp("models") / "models.py"
    path.write_text(MODELS)
    return path


@pytest.fixture(scope="module")
def binary(models: Path) -> Path:
    """A valid compiled binary."""
    out = models.parent / "mlp.tbin"
    result = subprocess.run([TASIC, "compile", f"{models}:mlp", "-o", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out


def test_unsupported_op_names_op_and_module(models: Path, tmp_path: Path) -> None:
    """The message names the ATen op and the module it came from."""
    line = fails_cleanly("compile", f"{models}:scan", "-o", str(tmp_path / "x.tbin"))
    assert "aten.cumsum" in line


def test_model_that_does_not_fit_names_buffer_size_capacity(models: Path, tmp_path: Path) -> None:
    """A 128-byte SRAM cannot hold one softmax row of 32 floats: name what, how big, and the capacity."""
    toml = (TARGETS_DIR / "tiny.toml").read_text().replace("bytes = 262144", "bytes = 128")
    target = tmp_path / "small.toml"
    target.write_text(toml.replace('name = "tiny"', 'name = "small"'))
    line = fails_cleanly("compile", f"{models}:mlp", "-o", str(tmp_path / "x.tbin"), "--target", str(target))
    assert "does not fit" in line and "softmax" in line and "132 bytes" in line and "128 bytes" in line


def test_model_too_big_for_hbm(models: Path, tmp_path: Path) -> None:
    """HBM overflow names the largest buffer."""
    toml = (TARGETS_DIR / "tiny.toml").read_text().replace("bytes = 1073741824", "bytes = 1024")
    target = tmp_path / "nohbm.toml"
    target.write_text(toml.replace('name = "tiny"', 'name = "nohbm"'))
    line = fails_cleanly("compile", f"{models}:mlp", "-o", str(tmp_path / "x.tbin"), "--target", str(target))
    assert "HBM" in line and "1024" in line


def test_static_fp8_without_calibration(models: Path, tmp_path: Path) -> None:
    """Static FP8 scales on a model with weights need a calibration; a timing-only step has nothing to calibrate."""
    line = fails_cleanly("compile", f"{models}:mlp", "-o", str(tmp_path / "x.tbin"), "--quantize", "fp8-static")
    assert "--quantize fp8-static needs --calibration FILE" in line and "tasic calibrate" in line
    args = ["compile", "--config", "llama-3-70b", "--timing-only", "--quantize", "fp8-static"]
    line = fails_cleanly(*args, "--calibration", str(tmp_path / "scales.json"), "-o", str(tmp_path / "x.tbin"))
    assert "--config has no weights to calibrate" in line and "fp8-static" in line


def test_truncated_binary(binary: Path, tmp_path: Path) -> None:
    """A cut file is refused."""
    bad = tmp_path / "cut.tbin"
    bad.write_bytes(binary.read_bytes()[:-100])
    assert "truncated" in fails_cleanly("run", str(bad)) or "checksum" in fails_cleanly("run", str(bad))


@pytest.mark.parametrize("where", [0.3, 0.6, 0.9])
def test_flipped_byte(binary: Path, tmp_path: Path, where: float) -> None:
    """One flipped byte anywhere is caught."""
    raw = bytearray(binary.read_bytes())
    raw[int(len(raw) * where)] ^= 0x40
    bad = tmp_path / "flip.tbin"
    bad.write_bytes(bytes(raw))
    fails_cleanly("run", str(bad))


def test_wrong_magic_and_version(binary: Path, tmp_path: Path) -> None:
    """Magic and version are checked with their own messages."""
    raw = binary.read_bytes()
    bad = tmp_path / "magic.tbin"
    bad.write_bytes(b"XBIN" + raw[4:])
    assert "magic" in fails_cleanly("run", str(bad))
    bad.write_bytes(raw[:4] + (99).to_bytes(2, "little") + raw[6:])
    assert "version" in fails_cleanly("run", str(bad))


def test_unknown_target(models: Path, tmp_path: Path) -> None:
    """Lists the shipped targets."""
    line = fails_cleanly("compile", f"{models}:mlp", "-o", str(tmp_path / "x.tbin"), "--target", "tpu9000")
    assert "tpu9000" in line and "tiny" in line


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("rows = 16", "rows = 0", "mxu.rows must be at least 1 (it is 0)"),  # used to hang the tile pass
        ("lanes = 16", "lanes = -4", "vpu.lanes must be at least 1 (it is -4)"),
        ("[mxu]", "[mxu_engine]", "it lacks 'mxu'"),
        ("transcendental = ", "exotic = ", "vpu.cost lacks transcendental"),
    ],
)
def test_impossible_target_file(models: Path, tmp_path: Path, old: str, new: str, message: str) -> None:
    """A target file with a figure no machine can have is refused before anything uses it."""
    toml = (TARGETS_DIR / "tiny.toml").read_text()
    assert old in toml
    target = tmp_path / "odd.toml"
    target.write_text(toml.replace(old, new, 1))
    line = fails_cleanly("compile", f"{models}:mlp", "-o", str(tmp_path / "x.tbin"), "--target", str(target))
    assert line.startswith(f"error: target file {target} is invalid: {message}")


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        ("tile{target=tiny", "bad pipeline 'tile{target=tiny': Malformed pass arguments"),
        ("raise-linear", "the pipeline left 'func.func' ops, not instructions"),
        ("lower-to-isa,tile{target=tiny}", "lower-to-isa needs tile-level IR, but @main has 'tfm.weight'"),
        ("tile{target=tiny},lower-to-isa", "lower-to-isa needs placed SRAM tiles: run plan-sram first"),
    ],
)
def test_pipeline_that_does_not_reach_instructions(models: Path, tmp_path: Path, pipeline: str, message: str) -> None:
    """A --pipeline that is malformed, stops early or runs passes out of order is refused, not encoded."""
    out = tmp_path / "x.tbin"
    line = fails_cleanly("compile", f"{models}:mlp", "-o", str(out), "--pipeline", pipeline)
    assert line.startswith(f"error: {message}"), line
    assert not out.exists()


def test_bad_option_values(models: Path, tmp_path: Path) -> None:
    """Option values no run can use are one line each, argparse's own complaints included."""
    out = str(tmp_path / "x.tbin")
    assert "--tp 0 --pp 1: both count chips" in fails_cleanly("compile", f"{models}:mlp", "-o", out, "--tp", "0")
    line = fails_cleanly("compile", f"{models}:mlp", "-o", out, "--quantize", "fp9")
    assert line.startswith("error: argument --quantize: invalid choice: 'fp9'") and "tasic compile --help" in line
    assert "invalid choice: 'frob'" in fails_cleanly("frob")
    line = fails_cleanly("compile", f"{models}:mlp", "-o", out, "--calibration", "scales.json")
    assert line == "error: --calibration gives static FP8 scales: add --quantize fp8-static (or fp8)"
    line = fails_cleanly("generate", "x.tbin", "--prompt", "hi", "--temperature", "-1")
    assert line == "error: --temperature and --top-k must not be negative (0: greedy, and no top-k cut)"


def test_run_and_asm_files(binary: Path, tmp_path: Path) -> None:
    """Inputs saved as one .npy array, an output directory that does not exist (refused before the
    simulation, not after), and a binary given to asm."""
    single = tmp_path / "x.npy"
    np.save(single, np.zeros((4, 16), np.float32))
    assert "is one .npy array: save inputs by name" in fails_cleanly("run", str(binary), "--inputs", str(single))
    inputs = tmp_path / "in.npz"
    np.savez(inputs, x=np.zeros((4, 16), np.float32))
    for option in ("--outputs", "--trace"):
        line = fails_cleanly("run", str(binary), "--inputs", str(inputs), option, str(tmp_path / "no" / "o.npz"))
        assert line == f"error: {option} {tmp_path / 'no' / 'o.npz'}: directory {tmp_path / 'no'} does not exist"
    assert "is not assembly text" in fails_cleanly("asm", str(binary), "-o", str(tmp_path / "y.tbin"))


def test_tasic_opt_user_errors(tmp_path: Path) -> None:
    """tasic-opt: bad IR, a missing or non-MLIR file, unknown passes and options are one line each."""
    opt = str(Path(sys.prefix) / "bin" / "tasic-opt")
    garbage, empty = tmp_path / "garbage.mlir", tmp_path / "empty.mlir"
    garbage.write_text("func.func @f() {\n  tfm.frobnicate\n}\n")
    empty.write_text("builtin.module {}\n")
    line = fails_cleanly(str(garbage), tool=opt)
    assert line.startswith(f"error: {garbage}:") and line.endswith(": Operation tfm.frobnicate is not registered")
    assert "No such file" in fails_cleanly(str(tmp_path / "none.mlir"), tool=opt)
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07")
    assert "Unrecognized file extension 'onnx'" in fails_cleanly(str(tmp_path / "m.onnx"), tool=opt)
    assert "bogus-pass" in fails_cleanly(str(empty), "-p", "bogus-pass", tool=opt)
    assert "unknown target 'nosuch'" in fails_cleanly(str(empty), "-p", "tile{target=nosuch}", tool=opt)
    assert "Malformed pass arguments" in fails_cleanly(str(empty), "-p", "tile{target=tiny", tool=opt)


def test_missing_model_path(tmp_path: Path) -> None:
    """A model path that does not exist."""
    assert "does not exist" in fails_cleanly("compile", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x.tbin"))


def test_bad_inputs(binary: Path, tmp_path: Path) -> None:
    """Missing npz, a non-npz file and a wrong input shape."""
    assert "no such inputs file" in fails_cleanly("run", str(binary), "--inputs", str(tmp_path / "none.npz"))
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    fails_cleanly("run", str(binary), "--inputs", str(junk))
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros((3, 16), np.float32))
    assert "shape" in fails_cleanly("run", str(binary), "--inputs", str(wrong))


def test_generate_without_tokenizer(tmp_path: Path) -> None:
    """A model directory without a tokenizer cannot generate text."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=64
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path)
    assert "tokenizer" in fails_cleanly("generate", str(tmp_path), "--prompt", "hello")


def test_onnx_dynamic_dimension_needs_input_shape(tmp_path: Path) -> None:
    """A dynamic ONNX dim: a clear error without --input-shape, a working binary with it."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])
    graph = helper.make_graph([helper.make_node("Tanh", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "tanh.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    line = fails_cleanly("compile", str(path), "-o", str(tmp_path / "t.tbin"))
    assert "input-shape" in line and "'x'" in line
    shapes = ["--input-shape", "x=3x8", "--input-shape", "input_ids=3x8"]
    line = fails_cleanly("compile", str(path), "-o", str(tmp_path / "t.tbin"), *shapes)
    assert line == f"error: --input-shape names input_ids, not an input of {path} (its inputs: x)"
    twice = ["--input-shape", "x=3x8", "--input-shape", "x=2x8"]
    assert "gives 'x' more than once" in fails_cleanly("compile", str(path), "-o", str(tmp_path / "t.tbin"), *twice)
    out = tmp_path / "t.tbin"
    result = subprocess.run(
        [TASIC, "compile", str(path), "-o", str(out), "--input-shape", "x=3x8"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    inputs, outputs = tmp_path / "in.npz", tmp_path / "out.npz"
    value = np.linspace(-2, 2, 24, dtype=np.float32).reshape(3, 8)
    np.savez(inputs, x=value)
    subprocess.run([TASIC, "run", str(out), "--inputs", str(inputs), "--outputs", str(outputs)], check=True)
    with np.load(outputs) as data:
        np.testing.assert_allclose(data["y"], np.tanh(value), atol=1e-6)
