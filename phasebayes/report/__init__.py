"""Reports of an analysis: a self-contained HTML page (figures embedded as PNG) and paper tables.

:func:`write_report` writes ``report.html``, ``tables.md``, ``tables.tex`` and ``figures/*.png`` into a
folder; :mod:`.tables` formats the result tables as Markdown or LaTeX (intervals labelled with their
probability mass and kind); :mod:`.figures` builds every figure.
"""

from __future__ import annotations

from .html import render_html, write_report
from .tables import latex_table, markdown_table, report_tables

__all__ = ["write_report", "render_html", "report_tables", "markdown_table", "latex_table"]
