"""LLM binaries: prefill + bucketed decode over a KV cache in HBM, against HF greedy decoding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tasic.backend.target import load_target
from tasic.frontend.errors import FrontendError
from tasic.isa_sim import Machine
from tasic.llm import LlmSession, compile_llm, generate

TINY = load_target("tiny")


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer GQA Llama saved with save_pretrained."""
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, vocab_size=128, max_position_embeddings=512,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("llama")
    LlamaForCausalLM(config).eval().save_pretrained(path)
    return path


def hf_greedy(model_dir: Path, prompt: list[int], new_tokens: int) -> list[int]:
    """Transformers' own greedy continuation."""
    model = LlamaForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]), max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False
        )
    return out[0, len(prompt) :].tolist()


def test_batch_of_four_prompts_decodes_like_hf(llama_dir: Path) -> None:
    """Four prompts of different lengths, left-padded in one batch: 16 greedy tokens each equal HF's."""
    binary, _ = compile_llm(str(llama_dir), TINY, "f32", batch=4, context=64, prompt_len=8)
    prompts = [[5, 17, 99, 3, 42], [7, 8], [100, 1, 2, 3, 4, 5, 6, 7], [64]]
    got = generate(LlmSession(binary, TINY), prompts, 16)
    assert got == [hf_greedy(llama_dir, p, 16) for p in prompts]


def test_decode_reads_the_cache(llama_dir: Path) -> None:
    """Decode cycles grow with the context bucket and stay far below a prefill of that length."""
    binary, _ = compile_llm(str(llama_dir), TINY, "f32", batch=1, context=256, prompt_len=192)
    machine = Machine(binary, TINY, timing_only=True)
    decode = [machine.run(f"decode_{n}").report.total_cycles for n in (64, 128, 256)]
    prefill = machine.run("prefill").report.total_cycles
    assert decode[0] < decode[1] < decode[2]
    assert decode[2] * 10 < prefill


def test_too_long_prompt_and_too_large_batch(llama_dir: Path) -> None:
    """One-line errors naming the compiled limits."""
    binary, _ = compile_llm(str(llama_dir), TINY, "f32", batch=1, context=64, prompt_len=4)
    session = LlmSession(binary, TINY)
    with pytest.raises(FrontendError, match="at most 4"):
        generate(session, [[1, 2, 3, 4, 5]], 2)
    with pytest.raises(FrontendError, match="batch of 1"):
        generate(session, [[1], [2]], 2)
    for count in (0, 62):  # 4 prompt slots in a context of 64 leave room for 1 to 61 new tokens
        with pytest.raises(FrontendError, match=f"cannot generate {count} tokens: .* room for 1 to 61"):
            generate(session, [[1, 2]], count)
    assert len(generate(session, [[1, 2]], 61)[0]) == 61


def _family_configs() -> dict[str, object]:
    """Tiny random configs of each supported decoder family (transformers classes)."""
    import transformers as hf

    common = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
    common |= {"vocab_size": 128, "max_position_embeddings": 128}
    return {
        "llama": hf.LlamaConfig(num_key_value_heads=1, **common),  # MQA
        "mistral": hf.MistralConfig(num_key_value_heads=2, sliding_window=4, **common),
        "qwen2": hf.Qwen2Config(num_key_value_heads=2, **common),
        "gemma2": hf.Gemma2Config(
            num_key_value_heads=2, head_dim=8, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
            query_pre_attn_scalar=8, sliding_window=4, **common,
        ),
        "phi3": hf.Phi3Config(num_key_value_heads=4, pad_token_id=0, **common),
        "gpt2": hf.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=128, n_positions=128, bos_token_id=0, eos_token_id=0),
    }  # fmt: skip


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "gemma2", "phi3", "gpt2"])
def test_families_decode_like_hf(family: str, tmp_path: Path) -> None:
    """16 greedy tokens through prefill + decode on the simulator equal HF's, for each family."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_family_configs()[family]).eval()
    model.save_pretrained(tmp_path)
    binary, _ = compile_llm(str(tmp_path), TINY, "f32", batch=1, context=32, prompt_len=12)
    prompt = [3, 9, 27, 81, 115, 17, 51, 25, 75, 97]
    got = generate(LlmSession(binary, TINY), [prompt], 16)[0]
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        ref = reloaded.generate(torch.tensor([prompt]), max_new_tokens=16, min_new_tokens=16, do_sample=False)
    assert got == ref[0, len(prompt) :].tolist()


def test_memory_plan_refuses_what_does_not_fit(llama_dir: Path, tmp_path: Path) -> None:
    """Weights + KV cache beyond the target's HBM: a clear refusal with the figures."""
    from tasic.backend.target import TARGETS_DIR
    from tasic.compiler import CompileError

    toml = (TARGETS_DIR / "tiny.toml").read_text().replace("bytes = 1073741824", "bytes = 65536")
    path = tmp_path / "small-hbm.toml"
    path.write_text(toml.replace('name = "tiny"', 'name = "small-hbm"'))
    with pytest.raises(CompileError, match=r"weights [0-9,]+ \+ KV cache 16,384 bytes exceed its 65,536 bytes of HBM"):
        compile_llm(str(llama_dir), load_target(str(path)), "f32", batch=1, context=64, prompt_len=8)
