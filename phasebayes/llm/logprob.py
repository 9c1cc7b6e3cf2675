"""Teacher-forced log-probabilities of responses (response tokens only, temperature-consistent).

For a prompt (already rendered with the chat template) and a response ``y_1..y_m`` (the generated
tokens, including the end-of-sequence token when generation stopped on it),

    log P_T(y | prompt) = sum_j log_softmax(logits_j / T)[y_j],

the log-likelihood under the very distribution the sampler drew from (temperature ``T``, no top-k /
top-p truncation). Sequences are left-padded into batches (explicit ``position_ids`` so padding does
not shift positions) and only the logits of the last ``max response length`` positions are computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["sequence_logprobs", "token_logprobs"]


def _batches(order: list[int], lengths: list[int], batch_size: int, max_batch_tokens: int | None) -> list[list[int]]:
    out, cur, cur_max = [], [], 0
    for i in order:
        new_max = max(cur_max, lengths[i])
        if cur and (len(cur) >= batch_size or (max_batch_tokens and new_max * (len(cur) + 1) > max_batch_tokens)):
            out.append(cur)
            cur, new_max = [], lengths[i]
        cur.append(i)
        cur_max = new_max
    if cur:
        out.append(cur)
    return out


def token_logprobs(
    model: Any,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    *,
    temperature: float = 1.0,
    pad_token_id: int = 0,
    batch_size: int = 16,
    max_batch_tokens: int | None = 16384,
) -> list[np.ndarray]:
    """Per-token log-probabilities (float64 arrays of length ``len(response)``) of each response.

    ``prompts[i]`` and ``responses[i]`` are token-id lists; the model is run in inference mode as it is
    (activate the wanted checkpoint first). ``batch_size`` caps sequences per forward pass and
    ``max_batch_tokens`` caps padded tokens per pass (memory: logits are ``batch × response length ×
    vocabulary`` floats).
    """
    import torch

    if len(prompts) != len(responses):
        raise ValueError("prompts and responses must have the same length.")
    if not temperature > 0:
        raise ValueError("temperature must be > 0 for a likelihood.")
    device = next(model.parameters()).device
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    out: list[np.ndarray | None] = [None] * len(prompts)
    for batch in _batches(order, lengths, batch_size, max_batch_tokens):
        width = max(lengths[i] for i in batch)
        keep = max(len(responses[i]) for i in batch)
        if keep == 0:
            for i in batch:
                out[i] = np.zeros(0)
            continue
        ids = torch.full((len(batch), width), int(pad_token_id), dtype=torch.long)
        att = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            seq = list(prompts[i]) + list(responses[i])
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            att[row, width - len(seq) :] = 1
        pos = (att.cumsum(-1) - 1).clamp(min=0)
        ids, att, pos = ids.to(device), att.to(device), pos.to(device)
        with torch.inference_mode():
            # logits at positions width-keep-1 .. width-2 predict the last `keep` tokens
            logits = model(input_ids=ids, attention_mask=att, position_ids=pos, logits_to_keep=keep + 1).logits
            logits = logits[:, :-1].float() / float(temperature)
            logp = torch.log_softmax(logits, dim=-1)
            target = ids[:, width - keep :]
            tok = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).double().cpu().numpy()
        for row, i in enumerate(batch):
            m = len(responses[i])
            out[i] = tok[row, keep - m :] if m else np.zeros(0)
    return out  # type: ignore[return-value]


def sequence_logprobs(
    model: Any,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    *,
    temperature: float = 1.0,
    pad_token_id: int = 0,
    batch_size: int = 16,
    max_batch_tokens: int | None = 16384,
) -> np.ndarray:
    """Summed log-probability (nats, float64, shape ``(n,)``) of each response given its prompt.

    See :func:`token_logprobs` for the arguments; an empty response has log-probability 0.
    """
    per_token = token_logprobs(
        model,
        prompts,
        responses,
        temperature=temperature,
        pad_token_id=pad_token_id,
        batch_size=batch_size,
        max_batch_tokens=max_batch_tokens,
    )
    return np.array([float(t.sum()) for t in per_token], dtype=np.float64)
