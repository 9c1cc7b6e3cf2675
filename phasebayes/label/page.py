"""The labelling page: one static HTML document (no external files) driven by the JSON API of the server.

Everything from the run (prompt, answer, rubric text) is inserted with ``textContent``, never as HTML,
so markup or script inside an answer is shown as text and never runs. The page knows items only by
their opaque ids. Keys: ``1``…``9`` pick the rubric's anchors, a typed number + Enter gives any value on
the scale, ``s`` skips, ``u`` (or Backspace) undoes the last decision.
"""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'nonce-__NONCE__'; style-src 'unsafe-inline'; connect-src 'self'">
<title>phasebayes rating</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:960px;margin:1.2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.2em;margin:.2em 0} .muted{color:#666;font-size:.9em}
#bar{width:100%;height:12px} .box{border:1px solid #ccc;border-radius:6px;padding:.6em .9em;margin:.6em 0;white-space:pre-wrap;overflow-wrap:anywhere}
#prompt{background:#f6f6f6} #answer{background:#fff;min-height:5em;max-height:55vh;overflow-y:auto}
#anchors button{display:block;width:100%;text-align:left;margin:.25em 0;padding:.35em .6em;border:1px solid #bbb;border-radius:5px;background:#fafafa;cursor:pointer;font-size:.95em}
#anchors button:hover{background:#eef4ff} kbd{border:1px solid #aaa;border-radius:3px;padding:0 .3em;font-size:.85em;background:#fff}
#controls{margin:.6em 0} #controls button{margin-right:.5em} #msg{color:#a40;min-height:1.2em} #finished{display:none;font-size:1.1em}
</style></head>
<body>
<h1 id="title"></h1>
<div class="muted"><span id="rater"></span> · <span id="count"></span></div>
<progress id="bar" value="0" max="1"></progress>
<div id="main">
<div class="muted">Question asked to the model</div><div id="prompt" class="box"></div>
<div class="muted">The model's answer</div><div id="answer" class="box"></div>
<p><b id="question"></b></p>
<div id="anchors"></div>
<div id="controls">
 <label>Other value (<span id="range"></span>): <input id="value" type="number" size="6"></label>
 <button id="rate">Rate <kbd>Enter</kbd></button>
 <button id="skip">Skip <kbd>s</kbd></button>
 <button id="undo">Undo <kbd>u</kbd></button>
</div>
</div>
<div id="finished">All items are rated. Thank you — you can close this page (<kbd>u</kbd> undoes the last one).</div>
<div id="msg"></div>
<script nonce="__NONCE__">
(function () {
  "use strict";
  var state = null, busy = false;
  function el(id) { return document.getElementById(id); }
  function text(id, s) { el(id).textContent = (s === null || s === undefined) ? "" : String(s); }
  function show(st) {
    state = st;
    text("title", st.rubric.title);
    text("question", st.rubric.question);
    text("rater", "rater: " + st.rater);
    text("count", st.done + " of " + st.total + " done");
    text("range", st.rubric.min + "\\u2013" + st.rubric.max);
    el("bar").max = Math.max(st.total, 1); el("bar").value = st.done;
    var box = el("anchors");
    while (box.firstChild) { box.removeChild(box.firstChild); }
    st.rubric.anchors.forEach(function (a, i) {
      var b = document.createElement("button");
      var k = document.createElement("kbd"); k.textContent = String(i + 1);
      b.appendChild(k);
      b.appendChild(document.createTextNode(" " + a.value + ": " + a.text));
      b.addEventListener("click", function () { rate(a.value); });
      box.appendChild(b);
    });
    el("undo").disabled = !st.can_undo;
    if (st.item) {
      el("main").style.display = ""; el("finished").style.display = "none";
      text("prompt", st.item.prompt);
      text("answer", st.item.answer);
      el("answer").setAttribute("data-item", st.item.id);
      el("answer").scrollTop = 0;
    } else {
      el("main").style.display = "none"; el("finished").style.display = "block";
      el("answer").setAttribute("data-item", "");
    }
    el("value").value = "";
  }
  function call(method, path, body) {
    if (busy) { return; }
    busy = true; text("msg", "");
    var opts = {method: method, headers: {"Content-Type": "application/json"}};
    if (body !== undefined) { opts.body = JSON.stringify(body); }
    return fetch(path, opts).then(function (r) {
      return r.json().then(function (j) { if (!r.ok) { text("msg", j.error || ("HTTP " + r.status)); } if (j.state) { show(j.state); } });
    }).catch(function (e) { text("msg", "Not saved: the rating server is not reachable (" + e + "). Restart `phasebayes label`; nothing rated so far is lost."); })
      .then(function () { busy = false; });
  }
  function rate(v) { if (state && state.item) { call("POST", "api/rate", {item: state.item.id, value: v}); } }
  function skip() { if (state && state.item) { call("POST", "api/skip", {item: state.item.id}); } }
  function undo() { if (state && state.can_undo) { call("POST", "api/undo", {}); } }
  el("rate").addEventListener("click", function () { var v = el("value").value; if (v !== "") { rate(Number(v)); } });
  el("skip").addEventListener("click", skip);
  el("undo").addEventListener("click", undo);
  document.addEventListener("keydown", function (ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    var inInput = document.activeElement === el("value");
    if (ev.key === "Enter" && inInput) { var v = el("value").value; if (v !== "") { rate(Number(v)); } ev.preventDefault(); return; }
    if (inInput) { return; }
    if (/^[1-9]$/.test(ev.key) && state && Number(ev.key) <= state.rubric.anchors.length) {
      rate(state.rubric.anchors[Number(ev.key) - 1].value); ev.preventDefault();
    } else if (ev.key === "s") { skip(); ev.preventDefault(); }
    else if (ev.key === "u" || ev.key === "Backspace") { undo(); ev.preventDefault(); }
    else if (ev.key === "0" || ev.key === "v") { el("value").focus(); ev.preventDefault(); }
  });
  call("GET", "api/state");
})();
</script>
</body></html>
"""
