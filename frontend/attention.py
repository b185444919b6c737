"""`tasic::attention`: attention with logit soft-capping as one operator, so torch.export keeps it whole.

HF expresses Gemma-2's soft-capped attention only in eager code (matmul,
tanh, softmax); `tasic.frontend.hf_attention` calls this operator instead and
the importer maps it to one `tfm.attention {softcap}`::

    out = attention(q, k, v, mask, scale, softcap, is_causal)  # in graphs: ATTENTION_OP
"""

from __future__ import annotations

import torch


@torch.library.custom_op("tasic::attention", mutates_args=())
def attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    softcap: float | None,
    is_causal: bool,
) -> torch.Tensor:
    """Attention on q [B,H,S,D], k/v [B,Hkv,Sk,D] (GQA), scores soft-capped before the mask; [B,H,S,Dv]."""
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    scores = query @ key.transpose(-1, -2) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    if is_causal:
        keep = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    return torch.softmax(scores.float(), dim=-1).to(value.dtype) @ value


ATTENTION_OP: torch._ops.OpOverload = torch.ops.tasic.attention.default
"""The operator as it appears in exported graphs."""


@attention.register_fake
def _attention_shape(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    softcap: float | None,
    is_causal: bool,
) -> torch.Tensor:
    return query.new_empty((*query.shape[:-1], value.shape[-1]))
