"""Benchmark the Claude judge against the local API stub.

2,000 judge calls against ``tests/anthropic_stub.py`` (run in its own process) answering each request
after 100 ms:

1. wall time at the default concurrency (fresh cache),
2. wall time one call at a time (fresh cache; ``--sequential-n`` items, default all 2,000 — use a
   smaller number to extrapolate linearly and save time),
3. a rerun with the warm cache (target: zero calls, a few seconds).

Targets: (1) at least 15x faster than (2); (3) zero calls. Run::

    .venv/bin/python benchmarks/bench_judge.py [--n 2000] [--latency 0.1] [--sequential-n 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from phasebayes.judge import ClaudeJudge, JudgeItem, judge_texts, load_rubric  # noqa: E402


def stub_stats(base_url: str) -> dict:
    with urllib.request.urlopen(f"{base_url}/_stub/stats") as resp:
        return json.load(resp)


def timed(judge: ClaudeJudge, items: list[JudgeItem], cache: Path, base_url: str) -> tuple[float, int, dict]:
    rubric = load_rubric("alignment")
    before = stub_stats(base_url)["message_requests"]
    t0 = time.perf_counter()
    out = judge_texts(judge, rubric, items, cache=cache, progress=False)
    wall = time.perf_counter() - t0
    calls = stub_stats(base_url)["message_requests"] - before
    statuses: dict[str, int] = {}
    for o in out:
        statuses[o.status] = statuses.get(o.status, 0) + 1
    return wall, calls, statuses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="judge calls")
    ap.add_argument("--latency", type=float, default=0.1, help="stub latency per request, seconds")
    ap.add_argument("--sequential-n", type=int, default=None, help="items for the one-at-a-time run (default: --n)")
    args = ap.parse_args()
    n_seq = args.sequential_n or args.n

    os.environ.setdefault("ANTHROPIC_API_KEY", "sk-bench-not-a-real-key")
    stub = subprocess.Popen([sys.executable, str(ROOT / "tests" / "anthropic_stub.py"), "--latency", str(args.latency)],
                            stdout=subprocess.PIPE, text=True)
    try:
        base_url = stub.stdout.readline().strip()
        items = [JudgeItem(f"Question {i % 20}?", f"Response number {i}: some text to judge.") for i in range(args.n)]
        with tempfile.TemporaryDirectory() as tmp:
            default = ClaudeJudge(base_url=base_url)
            conc = default.max_concurrency
            t_conc, c_conc, s_conc = timed(default, items, Path(tmp) / "conc.sqlite", base_url)
            t_warm, c_warm, s_warm = timed(ClaudeJudge(base_url=base_url), items, Path(tmp) / "conc.sqlite", base_url)
            seq_items = [JudgeItem(it.prompt, it.response + " (sequential)") for it in items[:n_seq]]
            t_seq, c_seq, s_seq = timed(ClaudeJudge(base_url=base_url, max_concurrency=1), seq_items,
                                        Path(tmp) / "seq.sqlite", base_url)
    finally:
        stub.terminate()
        stub.wait()
    t_seq_full = t_seq * args.n / n_seq
    print(f"judge benchmark: {args.n} calls, stub latency {args.latency * 1000:.0f} ms, Python {sys.version.split()[0]}")
    print(f"  concurrent (max_concurrency={conc}): {t_conc:8.2f} s  {c_conc} calls  {args.n / t_conc:7.1f} calls/s  {s_conc}")
    label = f"one at a time ({n_seq} items" + (", scaled)" if n_seq != args.n else ")")
    print(f"  {label:<34}: {t_seq_full:8.2f} s  {c_seq} calls  {n_seq / t_seq:7.1f} calls/s  {s_seq}")
    print(f"  speed-up                          : {t_seq_full / t_conc:8.1f} x   (target >= 15x)")
    print(f"  rerun with warm cache             : {t_warm:8.2f} s  {c_warm} calls (target: 0 calls, a few seconds)  {s_warm}")


if __name__ == "__main__":
    main()
