"""The `tasic` command: compile, run, generate, objdump, asm, targets.

    tasic compile path/to/hf_model -o model.tbin --target tiny --seq-len 16
    tasic run model.tbin --inputs in.npz --outputs out.npz --report
    tasic generate model.gguf --prompt "Hello" --chat
    tasic objdump model.tbin

User errors end in one line, `error: ...`, and exit code 1 (2 for bad usage).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import numpy as np

from tasic.errors import USER_ERRORS, UsageError

if TYPE_CHECKING:
    from tasic.backend.target import Target
    from tasic.frontend.torch_import import ImportedGraph


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_compile(args: argparse.Namespace) -> None:
    """Import a model, run the pipeline, write the binary."""
    from tasic.backend.target import load_target
    from tasic.backend.tbin import write_tbin
    from tasic.compiler import compile_module, default_pipeline

    target = load_target(args.target)
    if args.tp < 1 or args.pp < 1:
        raise UsageError(f"--tp {args.tp} --pp {args.pp}: both count chips (tensor parallel, stages), at least 1")
    args.dtype = args.dtype or ("bf16" if args.config is not None else "f32")  # a serving step runs in bf16
    if args.kv_dtype is not None and args.config is None:
        raise UsageError("--kv-dtype sets the KV cache of a --config serving step; a MODEL's cache follows --dtype")
    if args.config is not None:
        from tasic.serving import default_kv_dtype

        args.kv_dtype = args.kv_dtype or default_kv_dtype(args.dtype, args.quantize)
    if args.print_pipeline:
        spec = default_pipeline(target.spec, args.dtype, args.tp, args.quantize, args.calibration, args.kv_dtype)
        print(args.pipeline or spec)
        return
    if args.config is not None:
        _compile_step(args, target)
        return
    if args.timing_only:
        raise UsageError("--timing-only compiles from a --config (no weights); a MODEL brings its weights")
    if args.pp != 1:
        raise UsageError("--pp splits a --config serving step into pipeline stages; a MODEL compiles with --tp only")
    if args.model is None:
        raise UsageError("compile needs a MODEL (a Hugging Face model directory or file.py:function) or --config")
    if args.calibration and not args.quantize:
        raise UsageError("--calibration gives static FP8 scales: add --quantize fp8-static (or fp8)")
    if args.batch < 1 or args.seq_len < 1 or (args.context is not None and args.context <= args.seq_len):
        raise UsageError("--batch and --seq-len must be >= 1, and --context larger than --seq-len")
    if args.context:
        _compile_llm(args, target)
        return
    from tasic.frontend.hf import import_model, is_onnx_spec

    start = time.perf_counter()
    sizes = "" if is_onnx_spec(args.model) else f" (batch {args.batch}, sequence {args.seq_len})"  # ONNX has its own
    _progress(f"[1/3] importing {args.model}{sizes}")
    shapes = _input_shapes(args)
    graph = import_model(args.model, batch=args.batch, seq_len=args.seq_len, input_shapes=shapes)
    unknown = [name for name in shapes if name not in graph.input_names]
    if unknown:
        raise UsageError(
            f"--input-shape names {', '.join(unknown)}, not an input of {args.model}"
            f" (its inputs: {', '.join(graph.input_names) or 'none'})"
        )
    _progress(f"      {time.perf_counter() - start:.2f}s, {sum(1 for _ in graph.module.walk())} ops")
    _note_float_outputs(graph, args.dtype)
    _progress(f"[2/3] compiling for {target.name} in {args.dtype}")
    metadata = {"model": str(args.model), "inputs": graph.input_names, "outputs": graph.output_names}
    binary = compile_module(
        graph.module, graph.weights, target, args.dtype, args.pipeline, metadata, _progress, tp=args.tp,
        quantize=args.quantize, calibration=args.calibration,
    )  # fmt: skip
    _progress(f"[3/3] writing {args.output}")
    write_tbin(binary, args.output)
    size = Path(args.output).stat().st_size
    print(
        f"wrote {args.output}: {len(binary.code)} instructions, {size} bytes, "
        f"HBM {binary.metadata['hbm_bytes']} bytes, SRAM {binary.metadata['sram_bytes']} bytes, "
        f"{time.perf_counter() - start:.1f}s"
    )


def _note_float_outputs(graph: ImportedGraph, dtype: str) -> None:
    """Say so when the model declares outputs of another float type than float32 (f16, f64, bf16): the
    simulator computes in `dtype` and returns every float output as a float32 array."""
    from xdsl.dialects import func
    from xdsl.dialects.builtin import AnyFloat, f32

    main = next(op for op in graph.module.body.block.ops if isinstance(op, func.FuncOp))
    others = [
        f"{name} ({element})"
        for name, result in zip(graph.output_names, main.function_type.outputs.data, strict=True)
        if isinstance(element := result.element_type, AnyFloat) and element != f32  # type: ignore[attr-defined]
    ]
    if others:
        _progress(f"note: {', '.join(others)} computed in {dtype} and returned as float32 arrays")


def _compile_step(args: argparse.Namespace, target: Target) -> None:
    """A serving step of a Llama-family config (no weights): compile, then simulate its timing."""
    from tasic.backend.tbin import write_tbin
    from tasic.frontend.llama_step import BatchStep
    from tasic.serving import compile_step, load_config, simulate_step

    if args.model is not None:
        raise UsageError("give either a MODEL or --config, not both")
    if not args.timing_only:
        raise UsageError("--config has no weights: add --timing-only (the binary can only be timed)")
    config = load_config(args.config)
    if config.unmodelled:
        _progress(f"note: {config.name} is timed as a Llama-style decoder without {', '.join(config.unmodelled)}")
    step = BatchStep.seed(args.prefill, args.decode, args.output_tokens, args.decode_groups)
    start = time.perf_counter()
    _progress(
        f"[1/3] {config.name}: {config.layers} layers, hidden {config.hidden}; step {step.prefill} prefill +"
        f" {step.decode_tokens} decode tokens; {args.tp * args.pp} chip(s) of {target.name}"
        + (f" ({args.pp} pipeline stages of {args.tp})" if args.pp > 1 else "")
        + f", {args.dtype}"
        + (f", {args.quantize} linears" if args.quantize else "")
        + f", KV cache in {args.kv_dtype}"
    )
    if args.calibration:
        raise UsageError(
            "--config has no weights to calibrate: use --quantize fp8-static (static scales, placeholder values)"
            " or fp8 (run-time scales)"
        )
    binaries = compile_step(
        config, step, target, args.dtype, args.tp, args.pipeline, _progress, args.quantize, args.pp, args.kv_dtype
    )
    compile_s = time.perf_counter() - start
    for compiled in binaries:
        path = Path(args.output)
        if args.pp > 1:  # one file per distinct stage: out.stage0.tbin, ...
            path = path.with_name(f"{path.stem}.stage{compiled.stage.index}{path.suffix}")
            covers = f" (runs as stage(s) {', '.join(map(str, compiled.stands_for))})"
        else:
            covers = ""
        _progress(
            f"[2/3] writing {path}{covers}: {len(compiled.binary.code):,} instructions, compiled in {compile_s:.1f}s"
        )
        write_tbin(compiled.binary, path)
    _progress("[3/3] simulating the step (timing only)")
    for line in simulate_step(binaries, config, step, target, args.tp).lines():
        print(line)


def _input_shapes(args: argparse.Namespace) -> dict[str, tuple[int, ...]]:
    """--input-shape name=1x128 options as a dict."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in args.input_shape or []:
        name, _, dims = spec.rpartition("=")
        if name in shapes:
            raise UsageError(f"--input-shape gives '{name}' more than once")
        try:
            shapes[name] = tuple(int(d) for d in dims.split("x"))
        except ValueError:
            raise UsageError(f"bad --input-shape '{spec}': expected NAME=DxDxD, e.g. input_ids=1x128") from None
        if not name or any(d < 1 for d in shapes[name]):
            raise UsageError(f"bad --input-shape '{spec}': expected NAME=DxDxD with positive sizes")
    return shapes


def _compile_llm(args: argparse.Namespace, target: Target) -> None:
    """An LLM binary: prefill (prompts up to --seq-len) and decode entry points over a KV cache."""
    from tasic.backend.tbin import write_tbin
    from tasic.llm import compile_llm

    start = time.perf_counter()
    _progress(
        f"[1/2] importing {args.model} as an LLM (batch {args.batch}, prompt {args.seq_len}, context {args.context})"
    )
    binary, _ = compile_llm(
        args.model, target, args.dtype, args.batch, args.context, args.seq_len, _progress,
        args.quantize, args.calibration,
    )  # fmt: skip
    _progress(f"[2/2] writing {args.output}")
    write_tbin(binary, args.output)
    entries = ", ".join(binary.entry_points)
    elapsed = time.perf_counter() - start
    print(f"wrote {args.output}: entry points {entries}; {len(binary.code)} instructions, {elapsed:.1f}s")


def cmd_generate(args: argparse.Namespace) -> None:
    """Generate text on the simulator, streaming tokens, then the report."""
    from tasic.backend.target import load_target
    from tasic.backend.tbin import read_tbin
    from tasic.frontend.hf import load_tokenizer
    from tasic.llm import LlmSession, compile_llm, generate, report_lines

    if args.temperature < 0 or args.top_k < 0:
        raise UsageError("--temperature and --top-k must not be negative (0: greedy, and no top-k cut)")
    if args.model.endswith(".tbin"):
        binary = read_tbin(args.model)
        target = load_target(args.target or binary.target_name)
        tokenizer = load_tokenizer(args.tokenizer or binary.metadata.get("model", ""))
    else:
        target = load_target(args.target or "tiny")
        tokenizer = load_tokenizer(args.tokenizer or args.model)
    if tokenizer is None:
        where = f"in {args.tokenizer}" if args.tokenizer else f"for {args.model}"
        raise UsageError(f"no tokenizer found {where}: give --tokenizer (a model directory or .gguf with one)")
    if not args.model.endswith(".tbin"):
        binary, _ = compile_llm(
            args.model, target, args.dtype, 1, args.context, args.prompt_len, _progress,
            args.quantize, args.calibration,
        )  # fmt: skip
    if args.chat:
        messages = [{"role": "user", "content": args.prompt}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt = tokenizer.encode(text, add_special_tokens=False)
    else:
        prompt = tokenizer.encode(args.prompt)
    session = LlmSession(binary, target)
    shown = [""]

    def stream(_row: int, tokens: list[int]) -> None:
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        print(text[len(shown[0]) :], end="", flush=True)
        shown[0] = text

    tokens = generate(
        session, [prompt], args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, seed=args.seed,
        eos=None if args.ignore_eos else tokenizer.eos_token_id, on_token=stream,
    )  # fmt: skip
    print()
    print(f"[{len(tokens[0])} new tokens: {tokens[0]}]", file=sys.stderr)
    for line in report_lines(session, target):
        print(line)


def cmd_calibrate(args: argparse.Namespace) -> None:
    """Run a causal LM on sample prompts and write each linear's max |input| (static FP8 scales)."""
    from tasic.frontend.calibrate import calibrate_llm, write_calibration

    prompts = list(args.prompt or [])
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise UsageError(f"no such prompts file: {path}")
        prompts += [line for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise UsageError("calibrate needs sample prompts: --prompt TEXT (repeatable) or --prompts-file FILE")
    amax = calibrate_llm(args.model, prompts, chat=args.chat)
    write_calibration(amax, args.output)
    print(f"wrote {args.output}: max |input| of {len(amax)} linear layers over {len(prompts)} prompts")


def _load_inputs(path: str | None) -> dict[str, np.ndarray]:
    if path is None:
        return {}
    if not Path(path).is_file():
        raise UsageError(f"no such inputs file: {path}")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise UsageError(f"cannot read inputs {path}: not a numpy .npz file ({err})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise UsageError(f"inputs {path} is one .npy array: save inputs by name, np.savez(path, NAME=array, ...)")
    with data:
        return {key: data[key] for key in data.files}


def _writable(path: str | None, option: str) -> None:
    """UsageError unless `path`'s directory exists (checked before a long simulation, not after)."""
    if path is not None and not Path(path).resolve().parent.is_dir():
        raise UsageError(f"{option} {path}: directory {Path(path).parent} does not exist")


def cmd_run(args: argparse.Namespace) -> None:
    """Simulate a binary: outputs to npz, report and trace on request."""
    from tasic.backend.target import load_target
    from tasic.backend.tbin import read_tbin
    from tasic.isa_sim import Machine, write_chrome_trace

    binary = read_tbin(args.binary)
    target = load_target(args.target or binary.target_name)
    _writable(args.outputs, "--outputs")
    _writable(args.trace, "--trace")
    start = time.perf_counter()
    machine = Machine(binary, target, timing_only=args.timing_only)
    inputs = _load_inputs(args.inputs) if args.inputs else None
    result = machine.run(args.entry, inputs, trace=bool(args.trace))
    wall = time.perf_counter() - start
    if args.outputs:
        np.savez(args.outputs, **result.outputs)
        written = args.outputs if args.outputs.endswith(".npz") else f"{args.outputs}.npz"  # numpy adds it
        _progress(f"wrote {written}: {', '.join(result.outputs)}")
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
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not assembly text (make it with tasic objdump --with-data BINARY)") from None
    write_tbin(assemble(text), args.output)
    print(f"wrote {args.output}")


def cmd_targets(_args: argparse.Namespace) -> None:
    """List the shipped targets."""
    from tasic.backend.target import available_targets, load_target

    for name in available_targets():
        print(f"{name:12s} {load_target(name).description}")


class OneLineErrors(argparse.ArgumentParser):
    """argparse with its usage errors as one `error:` line (exit status 2), like every other user error."""

    def error(self, message: str) -> NoReturn:
        """Print `error: message (see PROG --help)` and exit."""
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _quantize_options(parser: argparse.ArgumentParser) -> None:
    """--quantize and --calibration (docs/quantization.md)."""
    parser.add_argument(
        "--quantize",
        choices=["fp8", "fp8-row", "fp8-static"],
        help="linear layers in FP8 E4M3 with fp32 accumulation: per-channel weight scales, activation scales "
        "per tensor (fp8) or per row (fp8-row) computed at run time, or static per tensor (fp8-static: from "
        "--calibration; a timing-only --config step needs none)",
    )
    parser.add_argument(
        "--calibration",
        help="with --quantize fp8 or fp8-static: static activation scales, a JSON file of weight name -> max |input|",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = OneLineErrors(prog="tasic", description="Compile transformers for a transformer-only ASIC.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineErrors)

    comp = sub.add_parser("compile", help="compile a model into a .tbin binary")
    comp.add_argument(
        "model",
        nargs="?",
        help="Hugging Face model directory (config.json + safetensors), a .gguf file (with --context),"
        " an .onnx file, or file.py:function",
    )
    comp.add_argument("-o", "--output", default="model.tbin", help="output binary (default: model.tbin)")
    comp.add_argument("--target", default="tiny", help="target name or .toml file (see `tasic targets`; default tiny)")
    comp.add_argument(
        "--dtype",
        help="storage and matrix dtype of floats (default f32; bf16 for a --config serving step, as it is served)",
    )
    _quantize_options(comp)
    comp.add_argument("--batch", type=int, default=1, help="batch size compiled in (default 1)")
    comp.add_argument("--seq-len", type=int, default=16, help="sequence length compiled in (default 16)")
    comp.add_argument(
        "--context",
        type=int,
        help="compile a causal LM with a KV cache of this many positions: "
        "entry points prefill (prompts up to --seq-len) and decode",
    )
    comp.add_argument(
        "--input-shape",
        action="append",
        metavar="NAME=DxD",
        help="shape of an ONNX input with dynamic dimensions, e.g. input_ids=1x128 (repeatable)",
    )
    comp.add_argument("--tp", type=int, default=1, help="tensor-parallel degree: chips to split the model over")
    comp.add_argument(
        "--pp",
        type=int,
        default=1,
        help="--config step: pipeline stages, each on its own --tp chips with its share of the layers (default 1)",
    )
    comp.add_argument(
        "--config",
        help="compile a serving step of a Llama-family config.json (or a shipped name: llama-3-70b), no weights",
    )
    comp.add_argument("--timing-only", action="store_true", help="with --config: no weights, timing simulation")
    comp.add_argument("--prefill", type=int, default=2048, help="--config step: prompt tokens (default 2048)")
    comp.add_argument("--decode", type=int, default=127, help="--config step: decoding sequences (default 127)")
    comp.add_argument(
        "--output-tokens", type=int, default=128, help="--config step: tokens each sequence generates (default 128)"
    )
    comp.add_argument("--decode-groups", type=int, default=4, help="--config step: context groups (default 4)")
    comp.add_argument(
        "--kv-dtype",
        help="--config step: KV-cache dtype, f32 bf16 f8e4m3 f8e5m2 (default f8e4m3 with --quantize, else --dtype)",
    )
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
    run.add_argument("--entry", default="main", help="entry point to run (default main; LLMs: prefill, decode_N)")
    run.set_defaults(handler=cmd_run)

    gen = sub.add_parser("generate", help="generate text with an LLM on the simulator")
    gen.add_argument("model", help="a Hugging Face causal LM directory, a .gguf file, or an LLM .tbin")
    gen.add_argument("--prompt", required=True, help="the prompt text")
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the tokenizer's chat template")
    gen.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate (default 32)")
    gen.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    gen.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = all)")
    gen.add_argument("--seed", type=int, default=0, help="random seed for sampling")
    gen.add_argument("--ignore-eos", action="store_true", help="keep generating past the end-of-sequence token")
    gen.add_argument("--target", help="target (default tiny, or the binary's)")
    gen.add_argument("--dtype", default="f32", help="f32 or bf16 when compiling (default f32)")
    _quantize_options(gen)
    gen.add_argument("--context", type=int, default=256, help="KV-cache positions when compiling (default 256)")
    gen.add_argument("--prompt-len", type=int, default=64, help="longest prompt when compiling (default 64)")
    gen.add_argument("--tokenizer", help="model directory or .gguf holding the tokenizer (for a .tbin)")
    gen.set_defaults(handler=cmd_generate)

    cal = sub.add_parser("calibrate", help="static FP8 activation scales of an LLM from sample prompts")
    cal.add_argument("model", help="a Hugging Face causal LM directory or a .gguf file")
    cal.add_argument("--prompt", action="append", help="a sample prompt (repeatable)")
    cal.add_argument("--prompts-file", help="a text file of sample prompts, one per line")
    cal.add_argument("--chat", action="store_true", help="wrap each prompt in the tokenizer's chat template")
    cal.add_argument("-o", "--output", default="calibration.json", help="output JSON (default calibration.json)")
    cal.set_defaults(handler=cmd_calibrate)

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
