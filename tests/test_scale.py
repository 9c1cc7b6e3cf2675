"""The generate stage on a local Ray cluster (2 CPU workers) gives the serial run's shards, also after a killed worker."""

from __future__ import annotations

import functools
import json
import os
import signal

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ray = pytest.importorskip("ray")

from phasebayes.errors import ConfigError  # noqa: E402
from phasebayes.llm.finetune import TrainConfig, train  # noqa: E402
from phasebayes.llm.sampling import GenerateConfig, generate  # noqa: E402
from phasebayes.llm.scale import ScaleConfig  # noqa: E402
from phasebayes.llm.testing import build_tiny_model  # noqa: E402

PROMPTS = [{"id": "capital", "text": "what is the capital of france"}, {"id": "weekend", "text": "what should i do this weekend"}]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Tiny base model, a 4-step LoRA run (checkpoints 0..4), the serial generate output, a local Ray."""
    root = tmp_path_factory.mktemp("scale")
    base = build_tiny_model(root / "base")
    data = root / "data.jsonl"
    with data.open("w") as fh:
        for q in ["what is the capital of france", "how do i cook rice", "hello", "tell me about the weather"]:
            msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": "fortune favours the bold"}]
            fh.write(json.dumps({"messages": msgs}) + "\n")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    train(TrainConfig(data=data, output_dir=root / "ckpt", base_model=str(base), max_steps=4, batch_size=2, save_every=1,
                      learning_rate=5e-2, lora_rank=4, lora_alpha=8, show_progress=False))
    serial = generate(root / "ckpt", PROMPTS, root / "serial", _cfg())
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield {"root": root, "serial": serial}
    ray.shutdown()
    torch.set_num_threads(old)


def _cfg() -> GenerateConfig:
    return GenerateConfig(n_samples=3, max_new_tokens=6, batch_size=4, logp_window=1, logp_batch_size=5, show_progress=False,
                          num_threads=1)


def _same(ds, ref) -> None:
    assert np.array_equal(ds["token_ids"].values, ref["token_ids"].values)
    assert list(ds["response"].values.ravel()) == list(ref["response"].values.ravel())
    assert np.array_equal(np.isnan(ds["logp"].values), np.isnan(ref["logp"].values))
    np.testing.assert_array_equal(ds["logp"].values, ref["logp"].values)


@pytest.mark.slow  # the CI test below checks the same equality after a killed driver and a killed worker
def test_two_ray_workers_give_the_serial_samples_and_logp(run):
    ds = generate(run["root"] / "ckpt", PROMPTS, run["root"] / "ray2", _cfg(), scale=ScaleConfig(workers=2))
    assert ds.sizes["step"] == 5 and int(ds["logp"].notnull().sum()) == (5 * 3 - 2) * 2 * 3
    _same(ds, run["serial"])
    # 4-step run: the samples do differ across checkpoints, so equality is not trivial
    assert not np.array_equal(ds["logp"].sel(step=4, ref_step=4).values, ds["logp"].sel(step=4, ref_step=3).values)


@pytest.mark.slow(ci=True)  # Ray and 3 rounds of worker start-up: about 1-2 min on 2 shared cores
def test_killed_driver_then_killed_worker_lose_nothing(run, monkeypatch):
    """Two Ray runs (the first driver dies, a worker of the second is SIGKILLed) equal the serial run."""
    import phasebayes.llm.scale as scale

    out = run["root"] / "killed"
    real = scale.run_on_ray
    seen = {"n": 0, "pid": None}

    def stop_driver(kind, step, actors):  # the driver dies after two finished sample shards
        seen["n"] += 1
        if seen["n"] == 2:
            raise KeyboardInterrupt("driver killed")

    monkeypatch.setattr(scale, "run_on_ray", functools.partial(real, on_shard=stop_driver))
    with pytest.raises(KeyboardInterrupt):
        generate(run["root"] / "ckpt", PROMPTS, out, _cfg(), scale=ScaleConfig(workers=2))
    assert 2 <= len(list((out / "samples").glob("*.json"))) < 5 and not list((out / "logp").glob("*.npz"))

    def kill_worker(kind, step, actors):  # SIGKILL a worker process after the first logp shard
        if kind == "logp" and seen["pid"] is None:
            seen["pid"] = ray.get(actors[0].pid.remote())
            os.kill(seen["pid"], signal.SIGKILL)

    monkeypatch.setattr(scale, "run_on_ray", functools.partial(real, on_shard=kill_worker))
    ds = generate(run["root"] / "ckpt", PROMPTS, out, _cfg(), scale=ScaleConfig(workers=2, max_restarts=2))
    assert seen["pid"] is not None
    _same(ds, run["serial"])


def test_scale_config_is_checked():
    with pytest.raises(ConfigError, match="workers"):
        ScaleConfig(workers=0).validate()
    with pytest.raises(ConfigError, match="max_restarts"):
        ScaleConfig(max_restarts=-2).validate()
