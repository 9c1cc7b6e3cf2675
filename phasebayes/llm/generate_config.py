"""Settings of the generate stage (:class:`GenerateConfig`): sampling, cross-checkpoint scoring, resources."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .prefix_logp import check_prefix_tokens

__all__ = ["GenerateConfig"]

# settings that do not change the result and may differ on a resumed run (``logp_prefix_tokens`` only
# adds numbers: a logp shard that lacks a requested prefix length is recomputed, samples are kept)
_RESUME_FREE = {"show_progress", "num_threads", "device", "logp_batch_size", "max_batch_tokens", "logp_prefix_tokens"}


@dataclass
class GenerateConfig:
    """Sampling and scoring settings (defaults sized for a 2-core CPU demo).

    Attributes
    ----------
    n_samples
        Responses sampled per prompt and checkpoint.
    temperature
        Sampling temperature T (> 0); the log-probabilities use the same T (log-softmax of logits / T).
    top_p
        Must be 1.0: truncated sampling would make the stored likelihoods inconsistent with the sampler.
    max_new_tokens
        Generation stops after this many tokens (stop reason ``"length"``) or at EOS (``"eos"``).
    batch_size
        Sequences per ``generate`` call (larger is faster: on one CPU thread 48 gives ~2x the tokens/s of
        12). Seeds are per checkpoint, so the samples depend on it: keep it fixed within a run.
    logp
        Compute cross-checkpoint log-probabilities (the ``logp`` array).
    logp_window
        K: score the samples of step index i under the checkpoints i-K..i+K (``None`` = all checkpoints).
        The exact-likelihood dissimilarity with windows of half-length L needs K >= 2L - 1 (L = 1: K = 1;
        L = 2: K = 3). Cost grows with 2K + 1.
    logp_prefix_tokens
        Prefix lengths m (tokens, each >= 1) for the ``logp_prefix`` array: log P(first m tokens of the
        response | checkpoint ref_step), from the same teacher-forced per-token log-probabilities as
        ``logp`` (a cumulative sum, no extra model call). Tokens are the generated ids, the final EOS
        included; a response of at most m tokens contributes its whole log-probability (= ``logp``).
        ``()`` = none. Changing it on a resumed run recomputes only the logp shards that lack a length.
    logp_batch_size, max_batch_tokens
        Sequences and padded response tokens per teacher-forcing pass (memory knobs: the logits of one
        pass take ``max_batch_tokens × vocabulary × 4`` bytes, twice; they do not change results).
    system_prompt
        Optional system message put before each prompt (``None`` = the chat template's default).
    seed
        Base seed; checkpoint ``step`` samples with the seed derived from ``(seed, step)``.
    include_base
        Use the base model as step 0 when the checkpoint folder has no step-0 checkpoint.
    dtype, device, num_threads, show_progress
        Torch dtype name, device (default CUDA if available), CPU threads, tqdm bars.
    """

    n_samples: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    batch_size: int = 32
    logp: bool = True
    logp_window: int | None = 2
    logp_prefix_tokens: tuple[int, ...] = (8, 16, 32)
    logp_batch_size: int = 16
    max_batch_tokens: int = 4096
    system_prompt: str | None = None
    seed: int = 0
    include_base: bool = True
    dtype: str = "float32"
    device: str | None = None
    num_threads: int | None = None
    show_progress: bool = True

    def validate(self) -> None:
        """Raise :class:`ConfigError` for invalid values."""
        if int(self.n_samples) < 1 or int(self.max_new_tokens) < 1 or int(self.batch_size) < 1:
            raise ConfigError("n_samples, max_new_tokens and batch_size must be >= 1.")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0 (a likelihood needs a proper sampling distribution), got {self.temperature}.")
        if self.top_p != 1.0:
            raise ConfigError(
                f"top_p={self.top_p} truncates the sampling distribution, which the stored log-probabilities do "
                "not account for; use top_p=1.0 (and lower the temperature for tamer text)."
            )
        if self.logp_window is not None and int(self.logp_window) < 0:
            raise ConfigError(f"logp_window must be >= 0 or None, got {self.logp_window}.")
        check_prefix_tokens(self.logp_prefix_tokens)
