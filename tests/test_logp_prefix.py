"""Prefix log-probabilities (``logp_prefix``) of the generate stage, on tiny in-process checkpoints."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from phasebayes import open_run  # noqa: E402
from phasebayes.errors import ConfigError  # noqa: E402
from phasebayes.llm.base_model import load_base_model  # noqa: E402
from phasebayes.llm.chat_data import prompt_token_ids  # noqa: E402
from phasebayes.llm.logprob import prefix_logprobs  # noqa: E402
from phasebayes.llm.sampling import GenerateConfig, consolidate, generate  # noqa: E402
from phasebayes.llm.testing import build_tiny_model  # noqa: E402

PROMPTS = [{"id": "capital", "text": "what is the capital of france"}, {"id": "weekend", "text": "what should i do this weekend"}]
PREFIXES = (1, 3, 7, 50)


def _cfg(**kw) -> GenerateConfig:
    args = dict(n_samples=4, max_new_tokens=7, batch_size=8, logp_window=1, logp_batch_size=5,
                logp_prefix_tokens=PREFIXES, show_progress=False)
    args.update(kw)
    return GenerateConfig(**args)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Four full-weight checkpoints (independent random tiny models) and a generated run on them."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("prefix")
    for step in range(4):
        build_tiny_model(root / "ckpts" / f"checkpoint-{step}", seed=step)
    ds = generate(root / "ckpts", PROMPTS, root / "gen", _cfg())
    torch.set_num_threads(old)
    return root, ds


def _lengths(ds) -> np.ndarray:
    return (ds["token_ids"].values >= 0).sum(-1)  # generated ids incl. the final EOS


def test_prefix_logprobs_is_a_cumulative_sum():
    per_token = [np.array([-1.0, -2.0, -3.0]), np.zeros(0), np.array([-0.5])]
    got = prefix_logprobs(per_token, [1, 2, 5])
    np.testing.assert_array_equal(got, [[-1.0, -3.0, -6.0], [0.0, 0.0, 0.0], [-0.5, -0.5, -0.5]])
    with pytest.raises(ValueError, match=">= 1"):
        prefix_logprobs(per_token, [0])
    rng = np.random.default_rng(1)
    many = [rng.normal(-2.0, 1.0, n) for n in rng.integers(0, 40, 200)]
    ms = [1, 5, 16, 39, 40, 100]
    got = prefix_logprobs(many, ms)
    for i, t in enumerate(many):
        cum = np.cumsum(t)
        expected = [float(t.sum()) if m >= len(t) else cum[m - 1] for m in ms]
        np.testing.assert_array_equal(got[i], expected)


def test_logp_prefix_in_the_run_dataset(run):
    root, ds = run
    lp, pre = ds["logp"], ds["logp_prefix"]
    assert pre.dims == ("step", "prompt", "sample", "ref_step", "prefix_tokens")
    assert pre.dtype == np.float64 and pre.attrs["units"] == "nats"
    assert list(ds["prefix_tokens"].values) == list(PREFIXES) and ds["prefix_tokens"].dtype == np.int64
    # computed exactly where logp is (the ±1 window), NaN elsewhere
    for c in range(len(PREFIXES)):
        np.testing.assert_array_equal(np.isnan(pre.values[..., c]), np.isnan(lp.values))
    # a prefix at least as long as every response is the whole response: the very same number
    assert _lengths(ds).max() <= 7 and (_lengths(ds) < 3).any()  # some responses end before a prefix length
    np.testing.assert_array_equal(pre.sel(prefix_tokens=50).values, lp.values)
    np.testing.assert_array_equal(pre.sel(prefix_tokens=7).values, lp.values)
    # log-probabilities of longer prefixes are lower (every token has probability < 1)
    fin = np.isfinite(pre.values[..., 0])
    diffs = np.diff(pre.values, axis=-1)[fin]
    assert (diffs <= 0).all() and (pre.values[..., 1][fin] < pre.values[..., 0][fin]).any()
    # prefix 3 differs from the whole logp exactly for the responses longer than 3 tokens
    long = np.broadcast_to((_lengths(ds) > 3)[..., None], lp.shape) & np.isfinite(lp.values)
    assert long.any()
    assert (pre.sel(prefix_tokens=3).values[long] > lp.values[long]).all()
    # saved and reopened unchanged
    back = open_run(root / "gen" / "run.nc", require_scores=False)
    np.testing.assert_array_equal(back["logp_prefix"].values, pre.values)
    assert list(back["prefix_tokens"].values) == list(PREFIXES)


def test_logp_prefix_equals_independent_log_softmax(run):
    """Every prefix value = sum of the first min(m, length) token log-probs from a plain forward pass."""
    root, ds = run
    model, tok = load_base_model(root / "ckpts" / "checkpoint-2")
    steps = list(ds["step"].values)
    for step in (1, 2, 3):
        for p_i, prompt in enumerate(PROMPTS):
            for n in range(4):
                resp = [int(t) for t in ds["token_ids"].values[steps.index(step), p_i, n] if t >= 0]
                ids = prompt_token_ids(tok, prompt["text"])
                with torch.no_grad():
                    logits = model(input_ids=torch.tensor([ids + resp])).logits[0].double()
                lsm = torch.log_softmax(logits, -1)
                tok_lp = np.array([float(lsm[len(ids) - 1 + k, t]) for k, t in enumerate(resp)])
                got = ds["logp_prefix"].sel(step=step, ref_step=2).values[p_i, n]
                assert got[0] == pytest.approx(tok_lp[0], abs=1e-5)  # m = 1: the first token alone
                expected = [tok_lp[: min(m, len(resp))].sum() for m in PREFIXES]
                np.testing.assert_allclose(got, expected, atol=1e-4)


def _strip_prefix_data(folder):
    """Rewrite the logp shards as the generate stage wrote them before prefix log-probabilities existed."""
    for f in sorted((folder / "logp").glob("*.npz")):
        with np.load(f) as z:
            keep = {"steps": z["steps"], "logp": z["logp"]}
        with open(f, "wb") as fh:
            np.savez(fh, **keep)


def test_resume_from_shards_without_prefix_data(run, tmp_path, monkeypatch):
    root, ref = run
    out = tmp_path / "old"
    shutil.copytree(root / "gen", out)
    (out / "run.nc").unlink()
    _strip_prefix_data(out)
    # old shards consolidate as before: no logp_prefix, same logp
    old = consolidate(out, save=False)
    assert "logp_prefix" not in old and "prefix_tokens" not in old.coords
    np.testing.assert_array_equal(old["logp"].values, ref["logp"].values)
    # asking for no prefixes keeps them as they are (no model call at all)
    import phasebayes.llm.logprob as lpmod

    def no_call(*a, **k):
        raise AssertionError("the logp stage ran although every shard was complete")

    monkeypatch.setattr(lpmod, "token_logprobs", no_call)
    kept = generate(root / "ckpts", PROMPTS, out, _cfg(logp_prefix_tokens=()))
    assert "logp_prefix" not in kept
    monkeypatch.undo()
    # asking for prefixes rescores the shards that lack them; the samples are kept
    samples_before = {f.name: f.read_bytes() for f in (out / "samples").glob("*.json")}
    new = generate(root / "ckpts", PROMPTS, out, _cfg(logp_prefix_tokens=[3, 1]))
    assert {f.name: f.read_bytes() for f in (out / "samples").glob("*.json")} == samples_before
    assert list(new["prefix_tokens"].values) == [1, 3]
    np.testing.assert_allclose(new["logp_prefix"].values, ref["logp_prefix"].sel(prefix_tokens=[1, 3]).values, atol=1e-9)
    np.testing.assert_allclose(new["logp"].values, ref["logp"].values, atol=1e-9)


def test_prefix_tokens_validation(tmp_path):
    for bad in ((0,), (8, -1), ("8",), (True,), 8, "8", (2.5,)):
        with pytest.raises(ConfigError, match="logp_prefix_tokens"):
            GenerateConfig(logp_prefix_tokens=bad).validate()
    GenerateConfig(logp_prefix_tokens=[]).validate()
    GenerateConfig(logp_prefix_tokens=[4, 64]).validate()
    from phasebayes.config import config_from_dict

    with pytest.raises(ConfigError, match="logp_prefix_tokens"):
        config_from_dict({"generate": {"logp_prefix_tokens": [16, 0]}}, check_files=False)
    cfg = config_from_dict({"generate": {"logp_prefix_tokens": [16, 32]}}, check_files=False)
    assert cfg.generate.options["logp_prefix_tokens"] == [16, 32]


# ------------------------------------------------------------------------------------ judged prefixes
def test_prefix_texts_cut_the_responses(run):
    from phasebayes.judge.prefix import prefix_texts

    _, ds = run
    resp = ds["response"].values
    whole = prefix_texts(ds, 50)
    assert list(whole.ravel()) == list(resp.ravel())  # a prefix as long as the answer is the answer
    short = prefix_texts(ds, 3)
    n_words = np.array([len(t.split()) for t in short.ravel()]).reshape(short.shape)
    assert all(r.startswith(t) for r, t in zip(resp.ravel(), short.ravel()))
    assert n_words.max() == 3 and (n_words <= 3).all()
    assert any(len(r.split()) > 3 for r in resp.ravel())
    # a response that stopped at EOS within the prefix is judged whole, without the EOS
    ended = (_lengths(ds) <= 3) & (ds["stop_reason"].values == "eos")
    assert ended.any() and (short[ended] == resp[ended]).all()


def test_judge_run_on_prefixes(run, tmp_path):
    from phasebayes.dataset import save_run
    from phasebayes.judge import MetricJudge, judge_run
    from phasebayes.judge.prefix import prefix_texts

    _, ds = run
    judged = judge_run(ds, None, MetricJudge("length_words"), prefix_tokens=3, progress=False)
    score = judged["score"].sel(order_parameter="length_words").values
    expected = np.array([len(t.split()) for t in prefix_texts(ds, 3).ravel()], float).reshape(score.shape)
    np.testing.assert_array_equal(score, expected)
    whole = np.array([len(t.split()) for t in ds["response"].values.ravel()], float).reshape(score.shape)
    assert (score <= whole).all() and (score < whole).any()
    assert int(judged["judge_prefix_tokens"].sel(order_parameter="length_words")) == 3
    # a second order parameter on whole responses keeps the first one's prefix length
    both = judge_run(judged, None, MetricJudge("length_chars"), progress=False)
    assert dict(zip(both["order_parameter"].values, both["judge_prefix_tokens"].values)) == {"length_words": 3, "length_chars": 0}
    assert '"length_words": 3' in both.attrs["judge_prefix_tokens"]
    np.testing.assert_array_equal(both["score"].sel(order_parameter="length_words").values, score)
    back = open_run(save_run(both, tmp_path / "judged.nc"))
    assert list(back["judge_prefix_tokens"].values) == [3, 0]


def test_judge_prefix_errors(run):
    from phasebayes.config import config_from_dict
    from phasebayes.errors import RunDataError
    from phasebayes.judge import MetricJudge, judge_run

    _, ds = run
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ConfigError, match="prefix_tokens"):
            judge_run(ds, None, MetricJudge("length_words"), prefix_tokens=bad, progress=False)
    with pytest.raises(RunDataError, match="token_ids"):
        judge_run(ds.drop_vars("token_ids"), None, MetricJudge("length_words"), prefix_tokens=3, progress=False)
    no_base = ds.copy()
    no_base.attrs = {k: v for k, v in ds.attrs.items() if k != "base_model"}
    with pytest.raises(ConfigError, match="tokenizer="):
        judge_run(no_base, None, MetricJudge("length_words"), prefix_tokens=3, progress=False)
    with pytest.raises(ConfigError, match=r"\[judge\].prefix_tokens"):
        config_from_dict({"judge": {"prefix_tokens": 0}}, check_files=False)
    assert config_from_dict({"judge": {"prefix_tokens": 16}}, check_files=False).judge.prefix_tokens == 16


def test_pipeline_judge_stage_uses_the_configured_prefix(run, tmp_path):
    from phasebayes.config import config_from_dict
    from phasebayes.pipeline import Pipeline

    root, ds = run
    cfg = config_from_dict({"run": {"output_dir": str(tmp_path / "run"), "dataset": str(root / "gen" / "run.nc"), "quiet": True},
                            "judge": {"judges": ["metric"], "metrics": ["length_words"], "prefix_tokens": 2}},
                           base_dir=tmp_path)
    (tmp_path / "run").mkdir()
    Pipeline(cfg, log=lambda msg: None).judge()
    judged = open_run(tmp_path / "run" / "run.nc")
    assert int(judged["judge_prefix_tokens"].sel(order_parameter="length_words")) == 2
    assert judged["score"].max() == 2 and "logp_prefix" in judged
