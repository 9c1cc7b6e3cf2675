"""``[analyze] measurement = "ratings"``: validated config keys, a clear error without ratings, and the saved
ratings reaching the change-point model through the pipeline (no sampling: the analysis call is captured)."""

from __future__ import annotations

import textwrap

import pytest

from _label_run import make_run
from phasebayes import open_run
from phasebayes.config import load_config
from phasebayes.errors import ConfigError, PhasebayesError, RunDataError
from phasebayes.label import RatingStore, load_or_create_plan
from phasebayes.models.measurement import JudgeMeasurement

CONFIG = """
[run]
output_dir = "{out}"
dataset = "{dataset}"

[judge]
judges = ["metric"]
metrics = ["length_tokens"]

[analyze]
draws = 50
{extra}
"""


def _config(tmp_path, extra: str):
    run = tmp_path / "run"
    if not (run / "run.nc").exists():
        make_run(run, n_prompts=3, n_samples=2)
    p = tmp_path / "run.toml"
    p.write_text(textwrap.dedent(CONFIG.format(out=run, dataset=run / "run.nc", extra=extra)))
    return load_config(p), run


@pytest.mark.parametrize("extra, match", [
    ('measurement = "humans"', r"\[analyze\]\.measurement = 'humans' is not allowed"),
    ('measurement = "ratings"\nmeasurement_link = "cubic"', r"measurement_link = 'cubic' is not allowed"),
    ('measurement = "ratings"\ntransition = "step"', r"needs transition = 'sigmoid'"),
])
def test_bad_measurement_keys_are_config_errors(tmp_path, extra, match):
    with pytest.raises(ConfigError, match=match):
        _config(tmp_path, extra)


def test_ratings_switch_reaches_the_model(tmp_path, monkeypatch):
    from phasebayes import analysis
    from phasebayes.pipeline import Pipeline

    cfg, run = _config(tmp_path, 'measurement = "ratings"\nmeasurement_link = "linear"')
    assert cfg.analyze.measurement == "ratings" and cfg.analyze.measurement_link == "linear"
    pipe = Pipeline(cfg)
    ds = open_run(run / "run.nc")
    with pytest.raises(RunDataError, match=r"no human ratings; collect some with `phasebayes label .* --rubric NAME`"):
        pipe.analyze()
    assert not (run / "analysis.nc").exists()

    key_before = pipe.stage_keys()["analyze"]
    plan = load_or_create_plan(ds, run / "ratings", "alignment", n=8, seed=1)
    store = RatingStore(run / "ratings", "ann")
    for i, item in enumerate(plan.ids):
        store.add(item, "alignment", 10.0 * i)
    assert pipe.stage_keys()["analyze"] != key_before  # new ratings make an earlier analysis stale

    seen = {}

    class Captured(Exception):
        pass

    def fake_analyze(ds, **kw):
        seen.update(kw)
        raise Captured

    monkeypatch.setattr(analysis, "analyze", fake_analyze)
    with pytest.raises(Captured):
        pipe.analyze()
    meas = seen["measurement"]
    assert isinstance(meas, JudgeMeasurement) and meas.link == "linear"
    assert len(meas.ratings) == 8 and set(meas.ratings["order_parameter"]) == {"alignment"}
    assert sorted(meas.ratings["value"]) == [10.0 * i for i in range(8)]
    assert issubclass(RunDataError, PhasebayesError)

    plain, _ = _config(tmp_path, "")  # the default: no measurement model, and the old stage hash
    assert plain.analyze.measurement == "none"
    assert Pipeline(plain)._measurement(ds) is None
