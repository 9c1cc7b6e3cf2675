"""Teacher-forced log-probabilities of responses (response tokens only, temperature-consistent).

For a prompt (already rendered with the chat template) and a response ``y_1..y_m`` (the generated
tokens, including the end-of-sequence token when generation stopped on it),

    log P_T(y | prompt) = sum_j log_softmax(logits_j / T)[y_j],

the log-likelihood under the very distribution the sampler drew from (temperature ``T``, no top-k /
top-p truncation). By default each distinct prompt is run once and its key/value cache is reused for
every response to it (responses right-padded); the alternative path left-pads full sequences (explicit
``position_ids`` so padding does not shift positions) and computes only the response logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ArgumentError, UnsupportedModelError

__all__ = ["sequence_logprobs", "token_logprobs", "prefix_logprobs"]


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
    max_batch_tokens: int | None = 4096,
    share_prompts: bool = True,
) -> list[np.ndarray]:
    """Per-token log-probabilities (float64 arrays of length ``len(response)``) of each response.

    ``prompts[i]`` and ``responses[i]`` are token-id lists; the model is run in inference mode as it is
    (activate the wanted checkpoint first). ``batch_size`` caps sequences per forward pass and
    ``max_batch_tokens`` caps padded tokens per pass (memory: logits are ``batch × response length ×
    vocabulary`` floats).

    ``share_prompts=True`` (default) runs each distinct prompt once and reuses its key/value cache for
    all responses to it (many samples share a prompt, so this skips most prompt compute); ``False``
    teacher-forces each full sequence in left-padded batches. Both give the same values up to
    floating-point rounding.
    """
    if len(prompts) != len(responses):
        raise ArgumentError(f"prompts ({len(prompts)}) and responses ({len(responses)}) must have the same length; "
                            "pass one prompt per response.")
    if not temperature > 0:
        raise ArgumentError(f"temperature must be > 0 for a likelihood, got {temperature!r}; pass the sampling temperature.")
    kw = dict(temperature=temperature, pad_token_id=pad_token_id, batch_size=batch_size, max_batch_tokens=max_batch_tokens)
    if share_prompts:
        return _token_logprobs_shared(model, prompts, responses, **kw)
    return _token_logprobs_padded(model, prompts, responses, **kw)


def _token_logprobs_shared(
    model: Any,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    *,
    temperature: float,
    pad_token_id: int,
    batch_size: int,
    max_batch_tokens: int | None,
) -> list[np.ndarray]:
    """Group by prompt: one prompt pass (cache kept), then right-padded response batches on that cache."""
    import copy

    import torch

    device = next(model.parameters()).device
    cache_kw = _cache_kwarg(model)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(tuple(int(t) for t in p), []).append(i)
    out: list[np.ndarray | None] = [None] * len(prompts)
    T = float(temperature)
    for prompt, members in groups.items():
        if not prompt:
            raise ArgumentError("a prompt must have at least one token; drop empty prompts or render them with the chat template.")
        todo = [i for i in members if len(responses[i])]
        for i in members:
            if not len(responses[i]):
                out[i] = np.zeros(0)
        if not todo:
            continue
        plen = len(prompt)
        with torch.inference_mode():
            res = model(input_ids=torch.tensor([prompt], device=device), use_cache=True)
            first = torch.log_softmax(res.logits[0, -1].float() / T, dim=-1)
            cache = _output_cache(res)
        lengths = [len(responses[i]) for i in todo]
        order = sorted(range(len(todo)), key=lambda k: lengths[k])
        for chunk in _batches(order, lengths, batch_size, max_batch_tokens):
            rows = [todo[k] for k in chunk]
            m = max(len(responses[i]) for i in rows)
            ids = torch.full((len(rows), m), int(pad_token_id), dtype=torch.long)
            att = torch.zeros((len(rows), plen + m), dtype=torch.long)
            att[:, :plen] = 1
            for r, i in enumerate(rows):
                ids[r, : len(responses[i])] = torch.tensor([int(t) for t in responses[i]], dtype=torch.long)
                att[r, plen : plen + len(responses[i])] = 1
            pos = (torch.arange(m) + plen).unsqueeze(0).expand(len(rows), m)
            kv = copy.deepcopy(cache)
            kv.batch_repeat_interleave(len(rows))
            with torch.inference_mode():
                logits = model(
                    input_ids=ids.to(device), attention_mask=att.to(device), position_ids=pos.to(device),
                    use_cache=True, **{cache_kw: kv},
                ).logits
                # logits at response position j predict token j+1; the first token comes from the prompt pass
                lp = torch.log_softmax(logits[:, :-1].float() / T, dim=-1)
                tgt = ids[:, 1:].to(device)
                rest = lp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1).double().cpu().numpy() if m > 1 else np.zeros((len(rows), 0))
                head = first[ids[:, 0].to(device)].double().cpu().numpy()
            for r, i in enumerate(rows):
                n = len(responses[i])
                out[i] = np.concatenate([[head[r]], rest[r, : n - 1]])
    return out  # type: ignore[return-value]


def _cache_kwarg(model: Any) -> str:
    """Name of the forward argument taking a KV cache (``cache`` in newer transformers, else ``past_key_values``)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _output_cache(res: Any) -> Any:
    for name in ("cache", "past_key_values"):
        value = res.get(name) if hasattr(res, "get") else getattr(res, name, None)
        if value is not None:
            return value
    raise UnsupportedModelError("the model returned no key/value cache; use share_prompts=False.")


def _token_logprobs_padded(
    model: Any,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    *,
    temperature: float,
    pad_token_id: int,
    batch_size: int,
    max_batch_tokens: int | None,
) -> list[np.ndarray]:
    """Left-padded full-sequence teacher forcing; logits only for the last response positions."""
    import torch

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
    max_batch_tokens: int | None = 4096,
    share_prompts: bool = True,
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
        share_prompts=share_prompts,
    )
    return np.array([float(t.sum()) for t in per_token], dtype=np.float64)


def prefix_logprobs(per_token: Sequence[np.ndarray], prefix_tokens: Sequence[int]) -> np.ndarray:
    """Log-probability (nats, float64) of the first ``m`` tokens of each response, for each ``m``.

    ``per_token`` is the output of :func:`token_logprobs` (one array per response); returns shape
    ``(len(per_token), len(prefix_tokens))`` with entry ``[i, k]`` = the sum of the first
    ``prefix_tokens[k]`` per-token log-probabilities of response ``i`` (a cumulative sum, no model
    call). A response of at most ``m`` tokens contributes its whole log-probability, the same number
    :func:`sequence_logprobs` gives; an empty response gives 0.
    """
    ms = np.array([int(m) for m in prefix_tokens], dtype=np.int64)
    if (ms < 1).any():
        raise ArgumentError(f"prefix lengths must be >= 1 token, got {ms.tolist()}; drop the zero or negative ones.")
    n = len(per_token)
    lengths = np.array([len(t) for t in per_token], dtype=np.int64)
    padded = np.zeros((n, max(1, int(lengths.max(initial=0)))), dtype=np.float64)
    for i, t in enumerate(per_token):
        padded[i, : len(t)] = t
    cum = np.cumsum(padded, axis=1)  # row-wise: no rounding carried over from other responses
    last = np.minimum(ms[None, :], lengths[:, None]) - 1  # index of the last token in each prefix
    out = np.where(last >= 0, np.take_along_axis(cum, np.clip(last, 0, None), axis=1), 0.0)
    whole = ms[None, :] >= lengths[:, None]
    totals = np.array([float(np.sum(t)) for t in per_token])  # the exact value sequence_logprobs stores
    return np.where(whole, totals[:, None], out) if n else out.reshape(0, len(ms))
