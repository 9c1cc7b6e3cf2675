"""Chat datasets (JSONL ``messages`` format) and prompt sets, tokenised with the chat template.

A fine-tuning file holds one JSON object per line, ``{"messages": [{"role": "system"|"user"|"assistant",
"content": "..."}, ...]}`` — the format of the published narrow fine-tuning sets. Training puts the loss
on assistant tokens only: the tokens an assistant turn adds to the rendered conversation (its content
and the end-of-turn marker), found by rendering growing prefixes of the conversation.

A prompt set holds one JSON object per line with ``id`` and ``text`` (optionally ``category``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..text_tables import json_lines

__all__ = [
    "TokenizedExample",
    "read_chat_jsonl",
    "read_prompts",
    "tokenize_conversation",
    "tokenize_dataset",
    "prompt_token_ids",
]

_ROLES = {"system", "user", "assistant"}


@dataclass(frozen=True)
class TokenizedExample:
    """One tokenised conversation: ``input_ids`` and a 0/1 ``loss_mask`` of the same length."""

    input_ids: list[int]
    loss_mask: list[int]


def read_chat_jsonl(path: str | os.PathLike) -> list[list[dict[str, str]]]:
    """Read a JSONL chat dataset; return the list of conversations (lists of ``{role, content}``).

    Raises :class:`ConfigError` naming the line for malformed records.
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"chat dataset {path} does not exist; pass a JSONL file with one {{'messages': [...]}} per line.")
    conversations = []
    for lineno, record in json_lines(path, "conversation", error=ConfigError):
        messages = record.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ConfigError(f"{path}: line {lineno}: needs a non-empty 'messages' list of {{'role', 'content'}} objects.")
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
                raise ConfigError(
                    f"{path}: line {lineno}: each message needs 'role' in {sorted(_ROLES)} and a string 'content'; got {m!r}."
                )
        if not any(m["role"] == "assistant" for m in messages):
            raise ConfigError(f"{path}: line {lineno}: has no assistant message, so nothing to learn from it.")
        conversations.append([{"role": m["role"], "content": m["content"]} for m in messages])
    if not conversations:
        raise ConfigError(f"chat dataset {path} is empty.")
    return conversations


def read_prompts(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a prompt set (JSONL with ``id`` and ``text``); ids must be unique."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"prompt set {path} does not exist; pass a JSONL file with one {{'id', 'text'}} per line.")
    prompts, seen = [], set()
    for lineno, rec in json_lines(path, "prompt", error=ConfigError):
        if not isinstance(rec.get("text"), str) or "id" not in rec:
            raise ConfigError(f"{path}: line {lineno}: needs 'id' and a string 'text'.")
        pid = str(rec["id"])
        if pid in seen:
            raise ConfigError(f"{path}: line {lineno}: duplicate prompt id {pid!r}; ids must be unique.")
        seen.add(pid)
        prompts.append({**{k: str(v) for k, v in rec.items()}, "id": pid})
    if not prompts:
        raise ConfigError(f"prompt set {path} is empty.")
    return prompts


def _render_ids(tokenizer: Any, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def tokenize_conversation(tokenizer: Any, messages: list[dict[str, str]], *, max_length: int | None = None) -> TokenizedExample:
    """Tokenise one conversation with the chat template and mark the assistant tokens.

    For every assistant turn ``i`` the tokens between the rendering of ``messages[:i]`` with the
    generation prompt and the rendering of ``messages[:i+1]`` are the turn's tokens (content plus the
    end-of-turn marker) and get ``loss_mask = 1``. Sequences longer than ``max_length`` tokens are
    truncated from the right.
    """
    full = _render_ids(tokenizer, messages, add_generation_prompt=False)
    mask = [0] * len(full)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = len(_render_ids(tokenizer, messages[:i], add_generation_prompt=True)) if i else 0
        upto = _render_ids(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if full[: len(upto)] != upto:
            raise ConfigError(
                "the chat template does not render conversations prefix-consistently, so assistant tokens "
                "cannot be located; use a standard chat template."
            )
        for j in range(start, len(upto)):
            mask[j] = 1
    if max_length is not None:
        full, mask = full[:max_length], mask[:max_length]
    return TokenizedExample(full, mask)


def tokenize_dataset(tokenizer: Any, conversations: list[list[dict[str, str]]], *, max_length: int | None = None) -> list[TokenizedExample]:
    """Tokenise every conversation; drop none (an example without assistant tokens after truncation raises)."""
    out = []
    for k, conv in enumerate(conversations):
        ex = tokenize_conversation(tokenizer, conv, max_length=max_length)
        if not any(ex.loss_mask):
            raise ConfigError(
                f"example {k} has no assistant token left after truncation to max_length={max_length}; raise max_length."
            )
        out.append(ex)
    return out


def prompt_token_ids(tokenizer: Any, text: str, *, system_prompt: str | None = None) -> list[int]:
    """Token ids of a single-turn user prompt rendered with the chat template and the generation prompt."""
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [{"role": "user", "content": text}]
    return _render_ids(tokenizer, messages, add_generation_prompt=True)
