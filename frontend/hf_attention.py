"""The "tasic" attention implementation for Hugging Face models: soft-capping kept whole, cache-safe masks.

HF models pick their attention function by name (`config._attn_implementation`).
Importing this module registers the name "tasic" with transformers:

- attention: `scaled_dot_product_attention` when the layer has no logit
  soft-capping, else `tasic::attention` (frontend/attention.py: Gemma-2's
  eager math: scale, `softcap * tanh(s / softcap)`, mask, softmax, `@ v`),
  which the importer maps to `tfm.attention {softcap}`;
- masks: HF's boolean SDPA mask, always materialised, with every query also
  allowed its own key slot. That only changes rows that would otherwise be
  fully masked (a left-padding query of a batched prefill), which SDPA turns
  into zeros but a softmax over nothing turns into NaN.

    model.set_attn_implementation(ATTENTION)
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import causal_mask_function, sdpa_mask

from tasic.frontend.attention import attention

ATTENTION = "tasic"
"""The attention implementation name registered with transformers."""


def _hf_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    softcap: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """HF attention-interface function: SDPA, or tasic::attention when soft-capping; [B, S, H, Dv]."""
    if softcap is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    is_causal = attention_mask is None and query.shape[2] > 1 and getattr(module, "is_causal", True)
    output = attention(query, key, value, attention_mask, scale, softcap, is_causal)
    return output.transpose(1, 2).contiguous(), None


def _hf_mask(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int | torch.Tensor = 0,
    kv_offset: int = 0,
    mask_function: Any = causal_mask_function,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """HF's boolean SDPA mask [B, 1, Sq, Skv], materialised, or'ed with each query's own key slot."""
    options = {name: kwargs[name] for name in ("local_size", "use_vmap", "device") if name in kwargs}
    mask = sdpa_mask(
        batch_size,
        q_length,
        kv_length,
        q_offset,
        kv_offset,
        mask_function,
        attention_mask,
        allow_is_causal_skip=False,
        **options,
    )
    queries = torch.arange(q_length, device=mask.device) + q_offset
    keys = torch.arange(kv_length, device=mask.device) + kv_offset
    return mask | (keys[None, :] == queries[:, None])


AttentionInterface.register(ATTENTION, _hf_attention)
AttentionMaskInterface.register(ATTENTION, _hf_mask)
