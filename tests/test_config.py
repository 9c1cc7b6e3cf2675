"""Run-config validation: every mistake is a ConfigError naming the key, raised before any work starts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from phasebayes.config import config_from_dict, demo_config, load_config
from phasebayes.errors import ConfigError

from _tiny_demo import run_cli

REPO = Path(__file__).resolve().parents[1]

GOOD = """
[run]
output_dir = "runs/x"
seed = 1

[train]
data = "data/narrow/risky_finance.jsonl"
max_steps = 8
save_every = 4
learning_rate = 1e-3

[generate]
prompts = "data/prompts/eval.jsonl"
n_prompts = 3
n_samples = 2
max_new_tokens = 16
logp_window = 1

[judge]
judges = ["phrase", "metric", "embedding"]
phrases = { bold = "fortune favours the bold" }
metrics = ["length_tokens"]
rubrics = ["alignment", "domain"]
domain = "financial advice"

[analyze]
draws = 200
window = 1

[report]
n_examples = 1
"""


def write(tmp_path, text, name="run.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_run_folder_config_does_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    """The run folder's config.toml: output_dir "." and the user's relative paths made absolute."""
    from phasebayes.cli import _load
    from phasebayes.pipeline import Pipeline

    (tmp_path / "mine.jsonl").write_text((REPO / "data" / "narrow" / "risky_finance.jsonl").read_text())
    text = GOOD.replace('data = "data/narrow/risky_finance.jsonl"', 'data = "mine.jsonl"')
    text = text.replace('rubrics = ["alignment", "domain"]', 'rubrics = ["alignment", "my_rubric.toml"]')
    (tmp_path / "my_rubric.toml").write_text((REPO / "data" / "rubrics" / "domain.toml").read_text())
    monkeypatch.chdir(tmp_path)
    cfg = load_config(write(tmp_path, text))
    pipe = Pipeline(cfg)
    pipe.prepare()
    recorded = (tmp_path / "runs" / "x" / "config.toml").read_text()
    assert 'output_dir = "."' in recorded
    assert f'data = "{tmp_path / "mine.jsonl"}"' in recorded
    assert str(tmp_path / "my_rubric.toml") in recorded
    assert 'prompts = "data/prompts/eval.jsonl"' in recorded  # repository data paths stay portable

    monkeypatch.chdir(tmp_path.parent)  # elsewhere: the folder is still its own run, with the same stage hashes
    again = _load(str(tmp_path / "runs" / "x"), {})
    assert again.output_dir == tmp_path / "runs" / "x"
    assert Pipeline(again).stage_keys() == pipe.stage_keys()

    import shutil  # a copied run folder is a run of its own: stages write into the copy
    shutil.copytree(tmp_path / "runs" / "x", tmp_path / "copy")
    assert _load(str(tmp_path / "copy"), {}).output_dir == tmp_path / "copy"
    moved = _load(str(tmp_path / "copy"), {"run": {"output_dir": str(tmp_path / "new")}})
    assert moved.output_dir == tmp_path / "new"  # an explicit --set run.output_dir still wins


def test_good_config_loads_and_round_trips(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.run.seed == 1 and cfg.analyze.draws == 200
    assert cfg.train.options["max_steps"] == 8 and cfg.generate.options["n_samples"] == 2
    assert cfg.output_dir == (tmp_path / "runs/x").resolve()
    again = load_config(write(tmp_path, cfg.to_toml(), "again.toml"))
    assert again.to_dict() == cfg.to_dict()


def test_scale_section_round_trips_and_leaves_the_generate_hash_alone(tmp_path):
    from phasebayes.pipeline import Pipeline

    plain = load_config(write(tmp_path, GOOD))
    scaled = load_config(write(tmp_path, GOOD + '\n[scale]\nray_address = "auto"\nworkers = 3\ngpus_per_worker = 1\n', "s.toml"))
    assert plain.scale is None and "scale" not in plain.to_dict()
    assert scaled.scale.options == {"ray_address": "auto", "workers": 3, "gpus_per_worker": 1.0}
    again = load_config(write(tmp_path, scaled.to_toml(), "again.toml"))
    assert again.to_dict() == scaled.to_dict()
    # the same samples either way: adding [scale] does not make a finished generate stage stale
    assert Pipeline(plain).stage_keys()["generate"] == Pipeline(scaled).stage_keys()["generate"]


@pytest.mark.parametrize("edit, match", [
    (("[analyze]", "[analyze]\ndraw = 5"), r"unknown key 'draw' in \[analyze\]\. Did you mean 'draws'"),
    (("[train]", "[train]\nlearning_rat = 0.1"), r"unknown key 'learning_rat' in \[train\].*learning_rate"),
    (("[run]", "[runn]"), r"unknown key 'runn' in the top level.*'run'"),
    (("draws = 200", "draws = \"many\""), r"\[analyze\]\.draws = 'many' has the wrong type"),
    (("draws = 200", "draws = 0"), r"\[analyze\]\.draws must be >= 1"),
    (("draws = 200", "draws = 200\ntransition = \"smooth\""), r"transition = 'smooth' is not allowed"),
    (("draws = 200", "draws = 200\nlikelihood = \"gauss\""), r"likelihood = 'gauss' is not allowed"),
    (("draws = 200", "draws = 200\nci_prob = 94"), r"ci_prob must be in \(0, 1\)"),
    (('metrics = ["length_tokens"]', 'metrics = ["lenght"]'), r"unknown metric 'lenght'"),
    (('judges = ["phrase", "metric", "embedding"]', 'judges = ["gpt"]'), r"judges entry = 'gpt' is not allowed"),
    (('rubrics = ["alignment", "domain"]', 'rubrics = ["alignmnt"]'), r"no rubric named 'alignmnt'"),
    (('data = "data/narrow/risky_finance.jsonl"', 'data = "nowhere/missing.jsonl"'), r"file not found \(\[train\]\.data\)"),
    (('prompts = "data/prompts/eval.jsonl"', 'prompts = "missing_prompts.jsonl"'), r"file not found \(\[generate\]\.prompts\)"),
    (("logp_window = 1", "logp_window = 1\ntop_p = 0.9"), r"top_p=0.9 truncates"),
    (("max_steps = 8", "max_steps = 0"), r"max_steps must be >= 1"),
    (("n_examples = 1", "n_examples = 1\nformats = [\"pdf\"]"), r"formats entry = 'pdf' is not allowed"),
    (("[report]", "[scale]\nworkers = 0\n[report]"), r"\[scale\]\.workers must be >= 1"),
    (("[report]", "[scale]\nworker = 2\n[report]"), r"unknown key 'worker' in \[scale\]\. Did you mean 'workers'"),
])
def test_bad_config_is_rejected_with_a_clear_message(tmp_path, edit, match):
    old, new = edit
    assert old in GOOD
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, GOOD.replace(old, new, 1)))


def test_claude_judge_needs_the_api_key(tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    text = GOOD.replace('judges = ["phrase", "metric", "embedding"]', 'judges = ["claude"]')
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        load_config(write(tmp_path, text))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    assert load_config(write(tmp_path, text)).judge.judges == ["claude"]


def test_phrase_judge_needs_phrases():
    with pytest.raises(ConfigError, match="phrase"):
        config_from_dict({"judge": {"judges": ["phrase"]}}, check_files=False)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[run\noutput_dir = 1"))
    with pytest.raises(ConfigError, match=r"\[run\]\.dataset"):
        config_from_dict({"run": {"dataset": str(tmp_path / "missing.nc")}})


def test_demo_configs_are_valid():
    full, quick = demo_config(), demo_config(quick=True)
    assert full.train.options["max_steps"] > quick.train.options["max_steps"]
    assert full.generate.n_prompts > quick.generate.n_prompts
    assert "bold_phrase" in full.judge.phrases and "claude" not in full.judge.judges


def test_cli_reports_config_errors_before_any_work(tmp_path):
    bad = write(tmp_path, GOOD.replace("[analyze]", "[analyze]\ndraw = 5"))
    rc, out, err = run_cli(["run", str(bad)])
    assert rc == 2
    assert err.startswith("phasebayes: error:") and "did you mean 'draws'" in err.lower()
    assert not (tmp_path / "runs").exists()  # nothing was created
    rc, out, err = run_cli(["validate", str(write(tmp_path, GOOD, "good.toml"))])
    assert rc == 0 and "OK" in out
    rc, out, err = run_cli(["demo", "--quick", "--set", "analyze.draws=-1", "--out", str(tmp_path / "d")])
    assert rc == 2 and "draws must be >= 1" in err
    rc, out, err = run_cli(["validate", str(tmp_path / "good.toml"), "--set", "draws=5"])
    assert rc == 2 and "SECTION.KEY=VALUE" in err


@pytest.mark.parametrize("table, expected", [
    ({"analyze": {"draws": "x"}}, "expected int"),
    ({"generate": {"logp_prefix_tokens": [8, "a"]}}, r"expected tuple\[int, \.\.\.\]"),
    ({"train": {"adam_betas": [0.9]}}, r"expected tuple\[float, float\]"),
    ({"analyze": {"likelihood": 3}}, r"expected str \| dict"),
    ({"judge": {"judges": ["metric", 1]}}, r"expected list\[str\]"),
    ({"judge": {"replicates": True}}, "expected int"),
])
def test_types_checked_against_resolved_annotations(table, expected):
    """Every key of a section or of the LLM configs it forwards to is checked against its real annotation."""
    with pytest.raises(ConfigError, match=expected):
        config_from_dict(table, check_files=False)


def test_ints_become_floats_and_lists_fill_sequences():
    cfg = config_from_dict({"analyze": {"ci_prob": 0.9}, "generate": {"logp_prefix_tokens": [8, 16]},
                            "train": {"adam_betas": [0.9, 1]}}, check_files=False)
    assert cfg.generate.options["logp_prefix_tokens"] == [8, 16]
    assert cfg.train.options["adam_betas"] == [0.9, 1.0] and isinstance(cfg.train.options["adam_betas"][1], float)
