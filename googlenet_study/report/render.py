"""Report stage 4: HTML (one self-contained file: inline CSS, figures as data URIs, no script) and PDF
(matplotlib's PdfPages: a title page, one page per figure, tables split across pages).

Every string that came from MLflow goes through `esc` before it reaches the HTML."""

from __future__ import annotations

import base64
import html
import io
import math
import textwrap
from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402

PDF_PAGE = (11.69, 8.27)  # inches: A4 landscape
PDF_ROWS_PER_PAGE = 40
PNG_DPI = 110


@dataclass
class Figure:
    id: str
    title: str
    caption: str
    fig: plt.Figure

    def png(self) -> bytes:
        buf = io.BytesIO()
        self.fig.savefig(buf, format="png", dpi=PNG_DPI)
        return buf.getvalue()


@dataclass
class Table:
    id: str
    title: str
    note: str
    frame: pd.DataFrame  # already formatted for reading: every cell a string


@dataclass
class Document:
    title: str
    facts: list[tuple[str, str]]       # (label, value) lines at the top
    method: list[str]                  # paragraphs: how the numbers were computed
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)   # shown before the figures
    appendix: list[Table] = field(default_factory=list)  # shown after them (excluded runs, comparisons ...)


def esc(x) -> str:
    return html.escape(str(x), quote=True)


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1180px;margin:2em auto;
padding:0 1em;color:#1b1b1b}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:12px;margin:.5em 0;display:block;overflow-x:auto}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
td.l{text-align:left}figure{margin:1em 0}img{max-width:100%;height:auto;border:1px solid #eee}
figcaption,.note{color:#555;font-size:12.5px}nav ol{columns:2}dl.facts{display:grid;
grid-template-columns:max-content auto;gap:2px 12px}dt{font-weight:600}dd{margin:0}
"""


def _table_html(t: Table) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in t.frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in r) + "</tr>"
                   for r in t.frame.itertuples(index=False))
    body = f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>" if len(t.frame) else \
        "<p class=note>none</p>"
    return f'<section id="{esc(t.id)}"><h2>{esc(t.title)}</h2><p class=note>{esc(t.note)}</p>{body}</section>'


def to_html(doc: Document) -> str:
    toc = [("facts", "Scope"), ("method", "Method")] + [(t.id, t.title) for t in doc.tables] + \
        [(f.id, f.title) for f in doc.figures] + [(t.id, t.title) for t in doc.appendix]
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        # No network and no script, whatever the data contains.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">",
        f"<title>{esc(doc.title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(doc.title)}</h1>",
        "<nav><h2>Contents</h2><ol>" + "".join(f'<li><a href="#{esc(i)}">{esc(t)}</a></li>' for i, t in toc)
        + "</ol></nav>",
        '<section id="facts"><h2>Scope</h2><dl class=facts>'
        + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in doc.facts) + "</dl></section>",
        '<section id="method"><h2>Method</h2>' + "".join(f"<p>{esc(p)}</p>" for p in doc.method) + "</section>",
    ]
    parts += [_table_html(t) for t in doc.tables]
    for f in doc.figures:
        data = base64.b64encode(f.png()).decode()
        parts.append(f'<section id="{esc(f.id)}"><h2>{esc(f.title)}</h2><figure>'
                     f'<img src="data:image/png;base64,{data}" alt="{esc(f.title)}">'
                     f"<figcaption>{esc(f.caption)}</figcaption></figure></section>")
    parts += [_table_html(t) for t in doc.appendix]
    parts.append("</body></html>")
    return "\n".join(parts)


def _table_pages(t: Table) -> int:
    return max(1, math.ceil(len(t.frame) / PDF_ROWS_PER_PAGE))


def to_pdf(doc: Document, path) -> int:
    with PdfPages(path, metadata={"Title": doc.title, "Creator": "googlenet-study report"}) as pdf:
        pdf.savefig(_text_page(doc))
        for t in doc.tables:
            _table_to_pdf(pdf, t)
        for f in doc.figures:
            pdf.savefig(f.fig, bbox_inches="tight")
        for t in doc.appendix:
            _table_to_pdf(pdf, t)
        n = pdf.get_pagecount()
    return n


def _text_page(doc: Document) -> plt.Figure:
    fig = plt.figure(figsize=PDF_PAGE)
    lines = [(doc.title, 15, "bold"), ("", 8, "normal")]
    lines += [(f"{k}: {v}", 8.5, "normal") for k, v in doc.facts]
    lines += [("", 8, "normal"), ("Method", 11, "bold")]
    for p in doc.method:
        lines += [(w, 8, "normal") for w in textwrap.wrap(p, 170)] + [("", 4, "normal")]
    y = 0.96
    for text, size, weight in lines:
        fig.text(0.04, y, text, fontsize=size, weight=weight, va="top", family="DejaVu Sans")
        y -= size / 72 / PDF_PAGE[1] * 1.45
    return fig


def _table_to_pdf(pdf: PdfPages, t: Table) -> None:
    """Monospaced columns, one text block per column (matplotlib's Table draws each cell: far slower)."""
    pages = _table_pages(t)
    cols = list(t.frame.columns)
    cells = [[_clip(c) for c in cols]] + [[_clip(v) for v in r] for r in t.frame.itertuples(index=False)]
    widths = [max(len(row[j]) for row in cells) for j in range(len(cols))]
    size = min(7.0, 0.94 * PDF_PAGE[0] * 72 / (0.6 * (sum(widths) + 2 * len(cols))))  # DejaVu Sans Mono: 0.6 em
    for i in range(pages):
        body = cells[1 + i * PDF_ROWS_PER_PAGE:1 + (i + 1) * PDF_ROWS_PER_PAGE]
        fig = plt.figure(figsize=PDF_PAGE)
        fig.text(0.03, 0.96, t.title + (f" ({i + 1}/{pages})" if pages > 1 else ""), fontsize=12, weight="bold")
        fig.text(0.03, 0.925, "\n".join(textwrap.wrap(t.note, 190)), fontsize=7, va="top")
        if not body:
            fig.text(0.03, 0.85, "none", fontsize=9, va="top")
        x = 0.03
        for j, w in enumerate(widths):
            lines = [cells[0][j].ljust(w), "-" * w] + [r[j].ljust(w) for r in body]
            fig.text(x, 0.86, "\n".join(lines), fontsize=size, family="DejaVu Sans Mono", va="top",
                     weight="normal", linespacing=1.5)
            x += (w + 2) * 0.6 * size / 72 / PDF_PAGE[0]
        pdf.savefig(fig)
        plt.close(fig)


def _clip(v, n: int = 60) -> str:
    s = str(v)  # no mathtext: figures.style() sets text.parse_math off
    return s if len(s) <= n else s[:n - 1] + "…"
