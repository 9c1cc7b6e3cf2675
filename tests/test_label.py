"""The blind labelling page: item sampling, storage, the JSON API and the page in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from _label_run import PAYLOAD, STEPS, make_run  # noqa: F401
from phasebayes.label import ItemPlan, LabelSession, RatingStore, load_or_create_plan, plan_items, start_server, transition_weights

@pytest.fixture()
def run(tmp_path):
    return make_run(tmp_path / "run")


def _ds(run):
    from phasebayes import open_run

    return open_run(run / "run.nc")


def test_plan_is_stratified_balanced_and_opaque(run):
    ds = _ds(run)
    w = np.array([0.05, 0.05, 0.4, 0.4, 0.05, 0.05])
    plan = plan_items(ds, "alignment", n=12, weights=w, seed=1)
    counts = pd.Series(plan.steps).value_counts().reindex(STEPS, fill_value=0).to_numpy()
    assert counts.sum() == 12
    # the two heavy steps can hold only 3 items each (one per prompt); the rest is spread by weight
    assert counts[2] == counts[3] == 3 and counts.max() == 3
    assert pd.Series(plan.prompts).value_counts().to_dict() == {"q0": 4, "q1": 4, "q2": 4}
    assert len(set(zip(plan.steps, plan.prompts, plan.samples))) == 12
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in plan.ids) and len(set(plan.ids)) == 12
    w2 = np.array([0.5, 0.3, 0.1, 0.1, 0.0, 0.0])
    plan2 = plan_items(ds, "alignment", n=6, weights=w2, seed=2)
    assert pd.Series(plan2.steps).value_counts().reindex(STEPS, fill_value=0).tolist() == [3, 2, 1, 0, 0, 0]


def test_plan_persists_and_extends(run):
    ds = _ds(run)
    a = load_or_create_plan(ds, run / "ratings", "alignment", n=5)
    b = load_or_create_plan(ds, run / "ratings", "alignment", n=5)
    assert a.ids == b.ids and a.steps == b.steps
    c = load_or_create_plan(ds, run / "ratings", "alignment", n=9)
    assert c.ids[:5] == a.ids and len(c) == 9 and len(set(zip(c.steps, c.prompts, c.samples))) == 9
    assert ItemPlan.from_json((run / "ratings" / "items-alignment.json").read_text()).ids == c.ids


def test_transition_weights_follow_tau_posterior(tmp_path):
    tau = np.full((2, 50, 2), 411.0)
    tau[..., 1] = 800.0  # another order parameter, ignored for the alignment rubric
    post = xr.Dataset({"tau": (("chain", "draw", "order_parameter"), tau)},
                      coords={"order_parameter": ["alignment_claude", "coherence"]})
    tree = xr.DataTree.from_dict({"changepoint/posterior": post})
    tree.to_netcdf(tmp_path / "analysis.nc", engine="netcdf4")
    w, source = transition_weights(np.array(STEPS), tmp_path / "analysis.nc", "alignment")
    assert w.sum() == pytest.approx(1.0)
    assert w[2] == pytest.approx(0.5 / 6 + 0.5) and w[0] == pytest.approx(0.5 / 6)
    assert "alignment_claude" in source
    w, source = transition_weights(np.array(STEPS), tmp_path / "missing.nc", "alignment")
    assert np.allclose(w, 1 / 6) and source.startswith("uniform")


def _request(url, method="GET", body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _keys(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from _keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _keys(v)


def _assert_blind(text: str, ds):
    # random tokens (16-hex item ids, the page's script nonce) may contain any digits: not what is checked
    text = re.sub(r"(?<![0-9A-Za-z])[0-9a-f]{16}(?![0-9A-Za-z])", "", text)
    text = re.sub(r"nonce(-|=\")[A-Za-z0-9_-]+", "nonce", text)
    low = text.lower()
    for word in ("step", "checkpoint", "score", "sample"):
        assert word not in low, word
    for t in STEPS:
        assert str(t) not in text
    for v in np.unique(ds["score"].values[np.isfinite(ds["score"].values)]):
        assert f"{v:g}" not in text


def test_api_saves_every_decision_resumes_and_keeps_raters_apart(run):
    ds = _ds(run)
    session = LabelSession(run, "alignment", rater="ann", n=8)
    httpd, url, _ = start_server(session)
    try:
        code, page = _request(url)
        assert code == 200 and "phasebayes rating" in page
        _assert_blind(page, ds)
        code, body = _request(url + "api/state")
        st = json.loads(body)["state"]
        _assert_blind(body.split('"answer"')[0], ds)  # everything but the answer text itself
        assert set(_keys(json.loads(body))) <= {"state", "rubric", "name", "title", "question", "min", "max", "anchors",
                                                "value", "text", "rater", "total", "done", "can_undo", "item", "id",
                                                "prompt", "answer"}
        assert st["total"] == 8 and st["done"] == 0 and st["item"]["id"] == session.plan.ids[0]
        assert [a["value"] for a in st["rubric"]["anchors"]] == [0, 25, 50, 75, 100]
        first = st["item"]["id"]
        code, body = _request(url + "api/rate", "POST", {"item": first, "value": 75})
        assert code == 200 and json.loads(body)["state"]["done"] == 1
        lines = (run / "ratings" / "ann.jsonl").read_text().splitlines()
        assert len(lines) == 1 and json.loads(lines[0])["value"] == 75.0 and json.loads(lines[0])["item"] == first
        # a second rating of the same item, a value off the scale and a non-JSON post are refused
        assert _request(url + "api/rate", "POST", {"item": first, "value": 10})[0] == 409
        second = session.plan.ids[1]
        assert _request(url + "api/rate", "POST", {"item": second, "value": 101})[0] == 400
        assert _request(url + "api/rate", "POST", {"item": second, "value": 5}, {"Content-Type": "text/plain"})[0] == 415
        assert _request(url + "api/state", headers={"Host": "evil.example:80"})[0] == 403
        code, body = _request(url + "api/skip", "POST", {"item": second})
        assert json.loads(body)["state"]["item"]["id"] == session.plan.ids[2]
        code, body = _request(url + "api/undo", "POST", {})
        assert json.loads(body)["state"]["item"]["id"] == second and json.loads(body)["state"]["done"] == 1
    finally:
        httpd.shutdown()
        httpd.server_close()
    # a new server (the old one killed) resumes at the first undecided item; another rater starts afresh
    again = LabelSession(run, "alignment", rater="ann", n=8)
    assert again.state()["item"]["id"] == second and again.state()["done"] == 1
    bob = LabelSession(run, "alignment", rater="bob", n=8)
    assert bob.state()["done"] == 0 and bob.plan.ids == again.plan.ids
    bob.rate(bob.plan.ids[0], 0)
    assert len(RatingStore(run / "ratings", "ann").records) == 1 and len(RatingStore(run / "ratings", "bob").records) == 1


def test_bad_input_gives_phasebayes_errors(tmp_path, run):
    from phasebayes.errors import ConfigError, PhasebayesError

    with pytest.raises(PhasebayesError, match="no run folder"):
        LabelSession(tmp_path / "nowhere", "alignment")
    with pytest.raises(ConfigError, match="rater name"):
        LabelSession(run, "alignment", rater="../x")
    with pytest.raises(ConfigError, match="no rubric named"):
        LabelSession(run, "no_such_rubric")
    from _tiny_demo import run_cli

    rc, out, err = run_cli(["label", str(tmp_path / "nowhere"), "--rubric", "alignment", "--no-browser"])
    assert rc == 2 and "no run folder" in err


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_page_in_headless_chromium(run, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (./setup.sh --test installs it)")
    from _cdp import Browser

    session = LabelSession(run, "alignment", rater="cara", n=6)
    httpd, url, _ = start_server(session)
    browser = Browser(exe, str(tmp_path / "profile"))
    try:
        page = browser.open(url)
        shown = page.wait_for("document.getElementById('answer').getAttribute('data-item')")
        assert shown == session.plan.ids[0]
        answer = page.eval("document.getElementById('answer').textContent")
        assert answer.startswith("Reply ") and "<script>" in answer and "onerror" in answer  # shown as text
        assert page.eval("document.querySelectorAll('#answer *').length") == 0  # no element made from the answer
        assert page.eval("document.getElementById('prompt').textContent").startswith("Question text")
        assert page.eval("document.getElementById('count').textContent") == "0 of 6 done"
        page.press("3")  # third anchor: 50
        page.wait_for("document.getElementById('count').textContent === '1 of 6 done'")
        recs = [json.loads(x) for x in (run / "ratings" / "cara.jsonl").read_text().splitlines()]
        assert recs == [{**recs[0], "item": session.plan.ids[0], "value": 50.0, "skipped": False}]
        page.reload()
        shown = page.wait_for("document.getElementById('count').textContent === '1 of 6 done' && "
                              "document.getElementById('answer').getAttribute('data-item')")
        assert shown == session.plan.ids[1]  # resumes at the next unrated answer
        assert page.eval("document.getElementById('bar').value") == 1
        page.press("s")
        page.wait_for("document.getElementById('count').textContent === '2 of 6 done'")
        page.press("u")
        page.wait_for("document.getElementById('answer').getAttribute('data-item') === " + json.dumps(session.plan.ids[1]))
        assert page.eval("typeof window.__pwned") == "undefined"  # the answer's script never ran
        assert page.eval("document.title") == "phasebayes rating"
        source = page.eval("document.documentElement.outerHTML")
        assert "Reply " in source
        _assert_blind(source.replace(answer, ""), session_ds := _ds(run))
        assert session_ds is not None
    finally:
        browser.close()
        httpd.shutdown()
        httpd.server_close()


def test_label_help(capsys):
    from phasebayes.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["label", "--help"])
    text = capsys.readouterr().out
    assert "usage: phasebayes label" in text and "--rubric NAME" in text and "--rater NAME" in text
    assert "--no-browser" in text and "--n N" in text
