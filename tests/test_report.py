"""The report: self-contained HTML that renders in headless Chromium with every figure loaded; paper tables."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from phasebayes.analysis import Analysis
from phasebayes.report import latex_table, markdown_table, render_html
from phasebayes.report.tables import fmt_interval

from _tiny_demo import tiny_demo_run

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]
CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  var d = document.createElement('div'); d.id = 'pb-check';
  d.textContent = 'PBCHECK images=' + ok + '/' + imgs.length + ' width=' + document.body.scrollWidth;
  document.body.appendChild(d);
});
</script>"""


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_demo_run(tmp_path_factory)[0]


def test_report_is_self_contained(run):
    page = (run / "report" / "report.html").read_text()
    imgs = re.findall(r"<img [^>]*src=\"([^\"]+)\"", page)
    assert len(imgs) >= 7
    assert all(src.startswith("data:image/png;base64,") for src in imgs)
    assert not re.search(r"(src|href)=\"(https?:|//|file:)", page)  # nothing external
    for section in ("Summary", "Score trajectories", "Gradient norm", "Distributional change",
                    "Decomposition of the total change", "Diagnostics", "Posterior predictive check",
                    "Example responses before and after the transition", "R-hat", "divergences", "94% HDI"):
        assert section in page, section
    assert "could not be drawn" not in page


def test_report_renders_in_headless_chromium(run, tmp_path):
    exe = chromium()
    if exe is None:
        pytest.skip("chromium is not installed (./setup.sh --test installs it)")
    page = (run / "report" / "report.html").read_text()
    n_imgs = page.count("<img ")
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
           "--dump-dom", probe.as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    m = re.search(r"PBCHECK images=(\d+)/(\d+) width=(\d+)", res.stdout)
    assert m, "the page did not finish loading:\n" + res.stdout[-1000:] + res.stderr[-1000:]
    loaded, total = int(m.group(1)), int(m.group(2))
    assert total == n_imgs and loaded == total, f"{loaded} of {total} figures loaded"
    shot = tmp_path / "shot.png"
    res = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1200,2000",
                          f"--screenshot={shot}", (run / "report" / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and shot.exists() and shot.stat().st_size > 20_000


def test_paper_tables(run):
    md = (run / "report" / "tables.md").read_text()
    tex = (run / "report" / "tables.tex").read_text()
    for op in ("bold_phrase", "length_tokens", "alignment"):
        assert op in md and op.replace("_", r"\_") in tex
    assert "94% HDI" in md and r"94\% HDI" in tex
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") >= 3
    assert r"\toprule" in tex and "$\\tau$" in tex
    assert re.search(r"^\|---", md, re.M)


def test_table_formatters():
    import pandas as pd

    df = pd.DataFrame({"a_b": ["x|y"], "τ [94% HDI]": [fmt_interval(1.0, 0.5, 2.25)]})
    md = markdown_table(df, "cap")
    assert "x\\|y" in md and "1.0 [0.5, 2.2]" in md and md.startswith("*cap*")
    tex = latex_table(df, "50% & more", label="tab:x")
    assert r"a\_b" in tex and r"50\% \& more" in tex and r"\label{tab:x}" in tex
    assert fmt_interval(float("nan"), 0, 1) == "–"
    assert fmt_interval(0.5, 0.25, 0.75, pct=True) == "50% [25%, 75%]"


def test_render_html_without_run_dataset(run):
    a = Analysis.load(run / "analysis.nc")
    page, pngs = render_html(a, ds=None, figures={k: b"" for k in ("trajectories", "tau", "ppc", "gradient_peak",
                                                                    "dissimilarity", "fractions", "fraction_curve",
                                                                    "peak_vs_tau")})
    assert "Example responses" not in page and "Diagnostics" in page
