"""Report stage 4: HTML (one self-contained file: inline CSS, figures as data URIs, no script) and PDF (the
same HTML typeset by WeasyPrint: its print style sheet gives A4 pages that short sections share, landscape
pages for wide tables, running headers and page numbers, and WeasyPrint turns the h1/h2 headings into the
PDF's bookmarks). The verdict comes first, before Contents, Scope and Method.

Byte-reproducible: the figures are PNGs without metadata (no software version, no time), the only time in
the page is Document.written (SOURCE_DATE_EPOCH when set, document.written), which also dates the PDF
(dcterms.created/modified -> CreationDate/ModDate); WeasyPrint writes no file identifier.

Every string that came from MLflow goes through `esc` before it reaches the HTML."""

from __future__ import annotations

import base64
import html
import io
import os
import re
from dataclasses import dataclass, field
from datetime import datetime

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402

from ..config import UserError  # noqa: E402

PNG_DPI = 110
PDF_ENV = "GOOGLENET_STUDY_PDF"  # "off": no report.pdf (tests that do not read it skip WeasyPrint's seconds)
# The PDF's contents are links without page numbers: target-counter() made WeasyPrint lay the whole document
# out again (measured: 9.8 -> 5.4 s of layout for the 1,000-run report).
PDF_MAX_ROWS = 200  # rows of one table in the PDF; report.html and the CSVs have them all (1,000-run reports)
WIDE_COLUMNS = 9    # a table with more columns than this gets a landscape page in the PDF
NUMERIC = re.compile(r"[=<>~+-]?(\d|inf|-$)")  # a cell of a number (or "-"): right-aligned; text: left


@dataclass
class Figure:
    id: str
    title: str
    caption: str
    fig: plt.Figure
    _png: bytes | None = field(default=None, repr=False)

    def png(self) -> bytes:
        """The figure as an RGB PNG without metadata, drawn once (the HTML and the PDF embed the same image).
        RGB, not matplotlib's RGBA: WeasyPrint splits an alpha channel into a second image it compresses again."""
        if self._png is None:
            self.fig.set_dpi(PNG_DPI)
            self.fig.canvas.draw()  # Agg (matplotlib.use above); runs the constrained layout as savefig would
            rgb = np.asarray(self.fig.canvas.buffer_rgba())[..., :3]
            buf = io.BytesIO()
            Image.fromarray(rgb, "RGB").save(buf, format="png", dpi=(PNG_DPI, PNG_DPI))
            self._png = buf.getvalue()
        return self._png


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
    verdict: list[str] = field(default_factory=list)    # sentences, first thing after the title
    written: datetime | None = None                     # dates the PDF (None: undated)


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
#verdict{border:1px solid #999;padding:0 1em;margin:1em 0}#verdict h2{margin-top:.6em}
figcaption,.note{color:#555;font-size:12.5px}nav ol{columns:2}dl.facts{display:grid;
grid-template-columns:max-content auto;gap:2px 12px}dt{font-weight:600}dd{margin:0}
@media print{
@page{size:A4;margin:16mm 14mm 18mm;
@top-left{content:string(title);font:8pt "DejaVu Sans",sans-serif;color:#777}
@bottom-right{content:"page " counter(page) " of " counter(pages);font:8pt "DejaVu Sans",sans-serif;color:#777}}
@page wide{size:A4 landscape}
body{font-size:9.5pt;max-width:none;margin:0;padding:0}h1{string-set:title content()}
nav h2{bookmark-level:none}nav ol{columns:1}nav a{color:inherit;text-decoration:none}
section.wide{page:wide}h2{margin-top:1.2em;break-after:avoid}section.fig{break-inside:avoid}
table{display:table;font-size:7pt;width:100%}th,td{white-space:normal;padding:2px 4px}
thead{display:table-header-group}tr{break-inside:avoid}
figure{margin:0;break-inside:avoid}img{width:100%;max-height:225mm;object-fit:contain;border:0}
}
"""


def _table_html(t: Table, max_rows: int | None = None) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in t.frame.columns)
    shown = t.frame if max_rows is None else t.frame.head(max_rows)
    left = [" class=l" if not all(NUMERIC.match(str(v)) for v in shown[c]) else "" for c in shown.columns]
    rows = "".join("<tr>" + "".join(f"<td{a}>{esc(v)}</td>" for a, v in zip(left, r)) + "</tr>"
                   for r in shown.itertuples(index=False))
    body = f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>" if len(t.frame) else \
        "<p class=note>none</p>"
    if len(shown) < len(t.frame):
        body += (f"<p class=note>The first {len(shown)} of {len(t.frame)} rows; report.html and the CSV files "
                 f"have them all.</p>")
    wide = " class=wide" if len(t.frame.columns) > WIDE_COLUMNS else ""
    return (f'<section id="{esc(t.id)}"{wide}><h2>{esc(t.title)}</h2><p class=note>{esc(t.note)}</p>{body}'
            "</section>")


def to_html(doc: Document, max_rows: int | None = None) -> str:
    """The report page; `max_rows` bounds each table (the PDF's copy)."""
    toc = [("verdict", "Verdict")] * bool(doc.verdict) + [("facts", "Scope"), ("method", "Method")] + \
        [(t.id, t.title) for t in doc.tables] + [(f.id, f.title) for f in doc.figures] + \
        [(t.id, t.title) for t in doc.appendix]
    # WeasyPrint dates the PDF from these (W3C dates); without them the PDF has no date at all.
    w3c = "" if doc.written is None else doc.written.strftime("%Y-%m-%dT%H:%M:%SZ")
    dated = "".join(f'<meta name=dcterms.{k} content="{w3c}">' for k in ("created", "modified")) if w3c else ""
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        # No network and no script, whatever the data contains.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">",
        f"<title>{esc(doc.title)}</title><meta name=generator content=\"googlenet-study report\">{dated}",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{esc(doc.title)}</h1>",
        '<section id="verdict"><h2>Verdict</h2>' + "".join(f"<p>{esc(v)}</p>" for v in doc.verdict) + "</section>"
        if doc.verdict else "",
        "<nav><h2>Contents</h2><ol>" + "".join(f'<li><a href="#{esc(i)}">{esc(t)}</a></li>' for i, t in toc)
        + "</ol></nav>",
        '<section id="facts"><h2>Scope</h2><dl class=facts>'
        + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in doc.facts) + "</dl></section>",
        '<section id="method"><h2>Method</h2>' + "".join(f"<p>{esc(p)}</p>" for p in doc.method) + "</section>",
    ]
    parts += [_table_html(t, max_rows) for t in doc.tables]
    for f in doc.figures:
        data = base64.b64encode(f.png()).decode()
        parts.append(f'<section id="{esc(f.id)}" class=fig><h2>{esc(f.title)}</h2><figure>'
                     f'<img src="data:image/png;base64,{data}" alt="{esc(f.title)}">'
                     f"<figcaption>{esc(f.caption)}</figcaption></figure></section>")
    parts += [_table_html(t, max_rows) for t in doc.appendix]
    parts.append("</body></html>")
    return "\n".join(parts)


def to_pdf(doc: Document, path) -> int:
    """report.pdf: the report page typeset by WeasyPrint (tables bounded to PDF_MAX_ROWS rows); returns the
    number of pages (0: not written, PDF_ENV=off)."""
    if os.environ.get(PDF_ENV, "").lower() == "off":
        return 0
    try:
        import weasyprint  # imported here: it loads Pango through ctypes, which costs a second
    except OSError as e:  # the Python package is a dependency; Pango/HarfBuzz come from `make system-deps`
        raise UserError(f"report.pdf: WeasyPrint cannot load its system libraries (Pango, HarfBuzz; "
                        f"`make system-deps` installs them): {str(e)[:200]}") from e
    rendered = weasyprint.HTML(string=to_html(doc, PDF_MAX_ROWS)).render()
    rendered.write_pdf(path)
    return len(rendered.pages)
