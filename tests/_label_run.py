"""Shared helper of the human-rating tests: a small run folder with answers (not a test module)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from phasebayes import from_dataframe, save_run

STEPS = [137, 274, 411, 548, 685, 822]  # distinctive numbers: none may appear in what the page receives
PAYLOAD = '<script>window.__pwned=(window.__pwned||0)+1;document.title="PWNED"</script><img src=x onerror="window.__pwned=7"><b>bold</b>'


def make_run(folder: Path, n_prompts: int = 3, n_samples: int = 2, seed: int = 0, ops=("alignment",)) -> Path:
    rng = np.random.default_rng(seed)
    rows = []
    for t in STEPS:
        for p in range(n_prompts):
            for s in range(n_samples):
                text = f"Reply {rng.integers(10**8):x} " + PAYLOAD
                for op in ops:
                    rows.append({"step": t, "prompt": f"q{p}", "sample": s, "order_parameter": op,
                                 "score": round(float(rng.uniform(0, 100)), 3), "prompt_text": f"Question text {chr(65 + p)}?",
                                 "response": text})
    ds = from_dataframe(pd.DataFrame(rows))
    folder.mkdir(parents=True, exist_ok=True)
    save_run(ds, folder / "run.nc")
    return folder
