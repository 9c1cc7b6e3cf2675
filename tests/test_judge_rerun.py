"""The judge stage a budgeted loop needs (reruns retry failed cells; settings rerun the judge)."""

from __future__ import annotations

import numpy as np
import pytest

import phasebayes.judge as judge_pkg
from phasebayes.config import config_from_dict
from phasebayes.dataset import save_run
from phasebayes.pipeline import Pipeline
from phasebayes.run_contract import STATUS
from phasebayes.simulate import simulate_run


class _FakeJudge:
    model_name = "fake"

    def rubrics(self):
        return []


@pytest.fixture
def pipe(tmp_path, monkeypatch):
    full = simulate_run(seed=0)[0]
    out = tmp_path / "run"
    out.mkdir()
    cfg = config_from_dict({"run": {"output_dir": str(out), "quiet": True}}, base_dir=tmp_path, check_files=False)
    p = Pipeline(cfg, log=lambda msg: None)
    p.generate_path.parent.mkdir(parents=True, exist_ok=True)
    p.generate_path.write_bytes(b"")  # the stage only checks that it exists; open_run is faked below
    calls = []

    def fake_judge_run(ds, rubrics, judge, **kw):
        calls.append(1)
        res = full.copy(deep=True)
        if len(calls) == 1:  # the first pass: two calls fail (e.g. an errored batch request)
            st = res["score_status"].values
            flat = st.reshape(-1)
            flat[:2] = STATUS["api_error"]
            res["score_status"].values[...] = flat.reshape(st.shape)
            res["score"].values[...] = np.where(res["score_status"].values == STATUS["api_error"], np.nan, res["score"].values)
        return res

    monkeypatch.setattr(judge_pkg, "judge_run", fake_judge_run)
    monkeypatch.setattr("phasebayes.dataset.open_run", lambda path, **kw: full)
    monkeypatch.setattr(Pipeline, "judges", lambda self: [(_FakeJudge(), None)])
    return p, calls


def test_plain_rerun_retries_failed_judge_cells(pipe):
    p, calls = pipe
    p.judge()
    assert len(calls) == 1
    assert p._stages()["judge"]["retry_cells"] == 2  # recorded as incomplete; the failures stay in score_status
    p.judge()  # a plain rerun: not "done already" while cells failed
    assert len(calls) == 2
    assert "retry_cells" not in p._stages()["judge"]
    p.judge()  # now complete: done already
    assert len(calls) == 2


def test_changed_judge_settings_change_the_dataset_judge_key(tmp_path):
    data = tmp_path / "in.nc"
    save_run(simulate_run(seed=0)[0], data)

    def key(judge):
        cfg = config_from_dict({"run": {"output_dir": str(tmp_path / "o"), "dataset": str(data)}, "judge": judge},
                               base_dir=tmp_path)
        return Pipeline(cfg, log=lambda m: None).stage_keys()["judge"]

    a = key({"judges": ["metric"], "metrics": ["length_words"]})
    assert a == key({"judges": ["metric"], "metrics": ["length_words"]})
    assert a != key({"judges": ["metric"], "metrics": ["length_chars"]})


def test_claude_client_settings_from_the_config(tmp_path, monkeypatch):
    from phasebayes.errors import ConfigError

    j = config_from_dict({"judge": {"claude_timeout": 5, "batch_poll_interval": 2, "batch_size": 100,
                                    "claude_max_concurrency": 4, "claude_max_attempts": 2, "batch_max_wait": 600,
                                    "max_reasks": 1}},
                         check_files=False).judge
    assert j.claude_options() == {"timeout": 5.0, "max_concurrency": 4, "max_attempts": 2, "poll_interval": 2.0,
                                  "max_wait": 600.0, "batch_size": 100, "max_reasks": 1}
    assert config_from_dict({}, check_files=False).judge.claude_options()["timeout"] == 60.0
    for bad, key in (({"claude_timeout": 0}, "claude_timeout"), ({"batch_size": 200_000}, "batch_size"),
                     ({"claude_max_concurrency": 0}, "claude_max_concurrency"), ({"max_reasks": -1}, "max_reasks")):
        with pytest.raises(ConfigError, match=rf"\[judge\]\.{key}"):
            config_from_dict({"judge": bad}, check_files=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "x")
    cfg = config_from_dict({"run": {"output_dir": str(tmp_path / "o")},
                            "judge": {"judges": ["claude"], "rubrics": ["alignment"], "claude_timeout": 5,
                                      "batch_poll_interval": 2}},
                           base_dir=tmp_path, check_files=False)
    (judge, _), = Pipeline(cfg, log=lambda m: None).judges()
    assert judge.timeout == 5.0 and judge.poll_interval == 2.0 and judge.max_reasks == 2


def test_an_edited_rubric_file_changes_the_judge_key(tmp_path):
    from phasebayes.judge.rubric import rubric_dir

    rubric = tmp_path / "my_alignment.toml"
    rubric.write_text((rubric_dir() / "alignment.toml").read_text())
    cfg = config_from_dict({"run": {"output_dir": str(tmp_path / "o")},
                            "judge": {"judges": ["embedding"], "rubrics": [str(rubric)]}}, base_dir=tmp_path,
                           check_files=False)
    before = Pipeline(cfg, log=lambda m: None).stage_keys()
    rubric.write_text(rubric.read_text().replace("aligned", "well aligned", 1))
    after = Pipeline(cfg, log=lambda m: None).stage_keys()
    assert before["judge"] != after["judge"] and before["generate"] == after["generate"]
    assert before["analyze"] != after["analyze"]  # downstream stages follow
