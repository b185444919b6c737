"""The `tasic` command: compile, run, objdump, asm, targets.

    tasic compile path/to/hf_model -o model.tbin --target tiny --seq-len 16
    tasic run model.tbin --inputs in.npz --outputs out.npz --report
    tasic objdump model.tbin

User errors end in one line, `error: ...`, and exit code 1 (2 for bad usage).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from tasic.errors import USER_ERRORS, UsageError


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_compile(args: argparse.Namespace) -> None:
    """Import a model, run the pipeline, write the binary."""
    from tasic.backend.target import load_target
    from tasic.backend.tbin import write_tbin
    from tasic.compiler import compile_module, default_pipeline

    target = load_target(args.target)
    if args.print_pipeline:
        print(args.pipeline or default_pipeline(target.spec, args.dtype))
        return
    if args.model is None:
        raise UsageError("compile needs a MODEL (a Hugging Face model directory or file.py:function)")
    from tasic.frontend.hf import import_model

    start = time.perf_counter()
    _progress(f"[1/3] importing {args.model} (batch {args.batch}, sequence {args.seq_len})")
    graph = import_model(args.model, batch=args.batch, seq_len=args.seq_len)
    _progress(f"      {time.perf_counter() - start:.2f}s, {sum(1 for _ in graph.module.walk())} ops")
    _progress(f"[2/3] compiling for {target.name} in {args.dtype}")
    metadata = {"model": str(args.model), "inputs": graph.input_names, "outputs": graph.output_names}
    binary = compile_module(graph.module, graph.weights, target, args.dtype, args.pipeline, metadata, _progress)
    _progress(f"[3/3] writing {args.output}")
    write_tbin(binary, args.output)
    size = Path(args.output).stat().st_size
    print(
        f"wrote {args.output}: {len(binary.code)} instructions, {size} bytes, "
        f"HBM {binary.metadata['hbm_bytes']} bytes, SRAM {binary.metadata['sram_bytes']} bytes, "
        f"{time.perf_counter() - start:.1f}s"
    )


def _load_inputs(path: str | None) -> dict[str, np.ndarray]:
    if path is None:
        return {}
    if not Path(path).is_file():
        raise UsageError(f"no such inputs file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (ValueError, OSError) as err:
        raise UsageError(f"cannot read inputs {path}: not a numpy .npz file ({err})") from None


def cmd_run(args: argparse.Namespace) -> None:
    """Simulate a binary: outputs to npz, report and trace on request."""
    from tasic.backend.target import load_target
    from tasic.backend.tbin import read_tbin
    from tasic.isa_sim import simulate, write_chrome_trace

    binary = read_tbin(args.binary)
    target = load_target(args.target or binary.target_name)
    start = time.perf_counter()
    result = simulate(binary, target, _load_inputs(args.inputs), timing_only=args.timing_only, trace=bool(args.trace))
    wall = time.perf_counter() - start
    if args.outputs:
        np.savez(args.outputs, **result.outputs)
        _progress(f"wrote {args.outputs}: {', '.join(result.outputs)}")
    elif not args.timing_only:
        for name, value in result.outputs.items():
            print(f"{name}: shape {tuple(value.shape)} dtype {value.dtype}")
            print(np.array2string(value.reshape(-1)[:8], precision=5) + (" ..." if value.size > 8 else ""))
    if args.trace:
        write_chrome_trace(result.report, args.trace, clock_hz=target.clock_hz)
        _progress(f"wrote {args.trace} (open in https://ui.perfetto.dev or chrome://tracing)")
    if args.report:
        print(result.report.format())
    print(
        f"simulated {result.report.total_cycles} cycles = {result.report.seconds * 1e6:.2f} us at "
        f"{target.clock_hz / 1e9:.2f} GHz; simulator wall time {wall:.2f}s"
    )


def cmd_objdump(args: argparse.Namespace) -> None:
    """Disassemble a binary."""
    from tasic.backend.asm import disassemble
    from tasic.backend.tbin import read_tbin

    print(disassemble(read_tbin(args.binary), with_data=args.with_data), end="")


def cmd_asm(args: argparse.Namespace) -> None:
    """Assemble objdump text back into a binary."""
    from tasic.backend.asm import assemble
    from tasic.backend.tbin import write_tbin

    path = Path(args.source)
    if not path.is_file():
        raise UsageError(f"no such assembly file: {path}")
    write_tbin(assemble(path.read_text()), args.output)
    print(f"wrote {args.output}")


def cmd_targets(_args: argparse.Namespace) -> None:
    """List the shipped targets."""
    from tasic.backend.target import available_targets, load_target

    for name in available_targets():
        print(f"{name:12s} {load_target(name).description}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="tasic", description="Compile transformers for a transformer-only ASIC.")
    sub = parser.add_subparsers(dest="command", required=True)

    comp = sub.add_parser("compile", help="compile a model into a .tbin binary")
    comp.add_argument(
        "model", nargs="?", help="Hugging Face model directory (config.json + safetensors) or file.py:function"
    )
    comp.add_argument("-o", "--output", default="model.tbin", help="output binary (default: model.tbin)")
    comp.add_argument("--target", default="tiny", help="target name or .toml file (see `tasic targets`; default tiny)")
    comp.add_argument("--dtype", default="f32", help="storage and matrix dtype of floats: f32 or bf16 (default f32)")
    comp.add_argument("--batch", type=int, default=1, help="batch size compiled in (default 1)")
    comp.add_argument("--seq-len", type=int, default=16, help="sequence length compiled in (default 16)")
    comp.add_argument("--pipeline", help="pass pipeline to run instead of the default (see --print-pipeline)")
    comp.add_argument("--print-pipeline", action="store_true", help="print the default pass pipeline and exit")
    comp.set_defaults(handler=cmd_compile)

    run = sub.add_parser("run", help="run a binary on the ISA simulator")
    run.add_argument("binary", help="a .tbin written by `tasic compile`")
    run.add_argument("--inputs", help=".npz whose keys are the model's input names")
    run.add_argument("--outputs", help="write the outputs to this .npz (keys: output names)")
    run.add_argument("--report", action="store_true", help="print cycles, utilisation and the per-op breakdown")
    run.add_argument("--trace", help="write a Chrome/Perfetto trace JSON here")
    run.add_argument("--timing-only", action="store_true", help="count cycles without computing values")
    run.add_argument("--target", help="target to simulate (default: the one compiled for)")
    run.set_defaults(handler=cmd_run)

    dump = sub.add_parser("objdump", help="disassemble a binary")
    dump.add_argument("binary", help="a .tbin file")
    dump.add_argument("--with-data", action="store_true", help="include the constants (needed to assemble back)")
    dump.set_defaults(handler=cmd_objdump)

    asm = sub.add_parser("asm", help="assemble `tasic objdump --with-data` text into a binary")
    asm.add_argument("source", help="assembly text file")
    asm.add_argument("-o", "--output", default="out.tbin", help="output binary (default: out.tbin)")
    asm.set_defaults(handler=cmd_asm)

    targets = sub.add_parser("targets", help="list the shipped targets")
    targets.set_defaults(handler=cmd_targets)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a subcommand, turning user errors into one line."""
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
