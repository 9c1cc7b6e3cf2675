"""The one way phasebayes gets matplotlib: imported lazily, so the package imports without it loaded."""

from __future__ import annotations


def pyplot(*, headless: bool = False):
    """``matplotlib.pyplot``. Interactive use keeps the user's backend (matplotlib itself picks a headless
    one when there is no display, and a notebook keeps its inline backend); ``headless=True`` (the report,
    which only writes files) switches a GUI backend to Agg so that no window opens."""
    import matplotlib

    if headless:
        backend = matplotlib.get_backend().lower()
        if backend != "agg" and not any(k in backend for k in ("inline", "ipympl", "widget")):
            try:
                matplotlib.use("Agg", force=False)
            except Exception:  # noqa: BLE001 - a backend already in use: keep it
                pass
    import matplotlib.pyplot as plt

    return plt
