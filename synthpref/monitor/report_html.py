"""The report page: blocks (key figures, tables, plots, notes) in sections, a table of contents, and one
inline copy of plotly.js, so the file opens anywhere with no network. Every text from the run goes
through html.escape; figure JSON is embedded so that no `<` in it can close its script element."""
from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass, field

STYLE = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1f2328;
       margin: 0; background: #f6f8fa; }
main { max-width: 1280px; margin: 0 auto; padding: 0 24px 48px; }
header { background: #24292f; color: #f6f8fa; padding: 18px 24px; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header .where { color: #afb8c1; font-family: ui-monospace, Menlo, monospace; font-size: 12px; }
h2 { margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 1px solid #d0d7de; font-size: 20px; }
h3 { margin: 22px 0 6px; font-size: 16px; }
h4 { margin: 16px 0 6px; font-size: 14px; color: #57606a; }
nav.toc { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 16px; margin: 16px 0; }
nav.toc ul { margin: 4px 0; padding-left: 18px; } nav.toc a { color: #0969da; text-decoration: none; }
.figures { display: flex; flex-wrap: wrap; gap: 10px; margin: 10px 0; }
.figure { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; padding: 8px 12px; min-width: 120px; }
.figure .value { font-size: 20px; font-weight: 600; } .figure .label { color: #57606a; font-size: 12px; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(380px, 1fr)); gap: 12px; }
.plots.wide { grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); }
.plot { background: #fff; border: 1px solid #d0d7de; border-radius: 6px; height: 270px; }
.plot.wide { height: 340px; }
table { border-collapse: collapse; background: #fff; margin: 8px 0; font-size: 13px; }
caption { text-align: left; padding: 4px 0; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td .text { max-width: 420px; white-space: pre-wrap; word-break: break-word; }
.note { color: #57606a; margin: 6px 0; } .warn { color: #9a6700; }
details { margin: 8px 0; } summary { cursor: pointer; color: #0969da; }
"""

# Draws each embedded figure into its div once the page has loaded.
BOOTSTRAP = """
(function () {
  var config = {displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"]};
  document.querySelectorAll("script.figure-data").forEach(function (node) {
    try {                                  // one bad figure leaves the others drawn
      var figure = JSON.parse(node.textContent);
      Plotly.newPlot(document.getElementById(node.dataset.target), figure.data, figure.layout, config);
    } catch (err) {
      console.error("figure " + node.dataset.target + ": " + err);
    }
  });
})();
"""


@dataclass
class Plot:
    metric: str                    # stable id within its run, e.g. "ppo/reward_raw" (event/field for curves)
    figure: dict                   # plotly figure JSON: {"data": [...], "layout": {...}}
    wide: bool = False


@dataclass
class Table:
    header: list[str]
    rows: list[list]
    caption: str = ""
    collapsed: bool = False        # inside a <details> element (long tables)


@dataclass
class Figures:
    """Key figures: (label, value) shown as tiles."""
    items: list[tuple[str, object]]


@dataclass
class Note:
    text: str
    warn: bool = False


@dataclass
class Section:
    title: str
    blocks: list = field(default_factory=list)
    children: list["Section"] = field(default_factory=list)
    run: str = ""                  # the sub-run its plots belong to ("" for the report's own run)
    anchor: str = ""

    def empty(self) -> bool:
        return not self.blocks and all(c.empty() for c in self.children)


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-").lower() or "x"


def fmt(value) -> str:
    """A number as a table or tile shows it: ints as they are, floats to 4 significant digits."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"
    return str(value)


def figure_json(figure: dict) -> str:
    """JSON that is safe inside a <script> element: non-finite numbers become null, and <, >, & are
    written as \\u escapes (JSON.parse reads them back as the same characters)."""
    text = json.dumps(_finite(figure), allow_nan=False, separators=(",", ":"), default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _finite(node):
    if isinstance(node, float) and not math.isfinite(node):
        return None
    if isinstance(node, dict):
        return {k: _finite(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_finite(v) for v in node]
    return node


# -- rendering --------------------------------------------------------------------------------------

class Page:
    """Renders sections to HTML, giving every plot a unique element id from its run and metric."""

    def __init__(self):
        self.ids: set[str] = set()

    def unique(self, base: str) -> str:
        anchor, n = base, 1
        while anchor in self.ids:
            n += 1
            anchor = f"{base}-{n}"
        self.ids.add(anchor)
        return anchor

    def block(self, block, run: str) -> str:
        if isinstance(block, Plot):
            return self.plot(block, run)
        if isinstance(block, Table):
            return table_html(block)
        if isinstance(block, Figures):
            return figures_html(block)
        if isinstance(block, Note):
            return f'<p class="note{" warn" if block.warn else ""}">{esc(block.text)}</p>'
        raise TypeError(f"unknown report block {type(block).__name__}")

    def plot(self, plot: Plot, run: str) -> str:
        div = self.unique("plot-" + slug(f"{run}--{plot.metric}" if run else plot.metric))
        kinds = sorted({t.get("type", "scatter") for t in plot.figure.get("data", [])})
        return (f'<div class="plot{" wide" if plot.wide else ""}" id="{esc(div)}" data-metric="{esc(plot.metric)}" '
                f'data-run="{esc(run)}" data-trace-types="{esc(" ".join(kinds))}"></div>'
                f'<script type="application/json" class="figure-data" data-target="{esc(div)}">'
                f'{figure_json(plot.figure)}</script>')

    def section(self, section: Section, run: str, depth: int) -> str:
        level = min(2 + depth, 4)
        parts = [f'<section id="{esc(section.anchor)}"><h{level}>{esc(section.title)}</h{level}>']
        plots: list[Plot] = []
        for block in section.blocks + [None]:
            if isinstance(block, Plot):
                plots.append(block)
                continue
            if plots:                            # a run of plots shares one grid
                wide = " wide" if all(p.wide for p in plots) else ""
                parts.append(f'<div class="plots{wide}">{"".join(self.plot(p, run) for p in plots)}</div>')
                plots = []
            if block is not None:
                parts.append(self.block(block, run))
        for child in section.children:
            parts.append(self.section(child, child.run or run, depth + 1))
        parts.append("</section>")
        return "".join(parts)

    def assign_anchors(self, sections: list[Section], prefix: str = "") -> None:
        for s in sections:
            s.anchor = s.anchor or self.unique("sec-" + slug(f"{prefix}-{s.title}" if prefix else s.title))
            self.assign_anchors(s.children, s.anchor)


def pruned(sections: list[Section]) -> list[Section]:
    """The sections that hold something, each with its empty subsections left out."""
    for s in sections:
        s.children = pruned(s.children)
    return [s for s in sections if not s.empty()]


def table_html(table: Table) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(cell_html(c) for c in row) + "</tr>" for row in table.rows)
    caption = f"<caption class=\"note\">{esc(table.caption)}</caption>" if table.caption and not table.collapsed else ""
    inner = f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if table.collapsed:
        return f"<details><summary>{esc(table.caption or 'table')}</summary>{inner}</details>"
    return inner


def cell_html(value) -> str:
    if isinstance(value, (int, float)) or value is None:
        return f'<td class="num">{esc(fmt(value))}</td>'
    text = str(value)
    return f'<td><div class="text">{esc(text if len(text) <= 600 else text[:600] + " …")}</div></td>'


def figures_html(figures: Figures) -> str:
    if not figures.items:
        return ""
    tiles = "".join(f'<div class="figure"><div class="value">{esc(fmt(v))}</div><div class="label">{esc(k)}</div></div>'
                    for k, v in figures.items)
    return f'<div class="figures">{tiles}</div>'


def toc_html(sections: list[Section]) -> str:
    def items(ss: list[Section], depth: int) -> str:
        lis = []
        for s in ss:
            sub = items(s.children, depth + 1) if depth < 1 and s.children else ""
            lis.append(f'<li><a href="#{esc(s.anchor)}">{esc(s.title)}</a>{sub}</li>')
        return f"<ul>{''.join(lis)}</ul>"
    return f'<nav class="toc"><strong>Contents</strong>{items(sections, 0)}</nav>'


def render_page(title: str, where: str, header: list, sections: list[Section], plotly_js: str) -> str:
    """The whole page; `header` holds blocks shown above the contents (key figures, notes)."""
    page = Page()
    sections = pruned(sections)
    page.assign_anchors(sections)
    body = "".join(page.block(b, "") for b in header) + toc_html(sections)
    body += "".join(page.section(s, s.run, 0) for s in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style>"
            f"<script>{plotly_js}</script></head><body>"
            f"<header><h1>{esc(title)}</h1><div class=\"where\">{esc(where)}</div></header>"
            f"<main>{body}</main><script>{BOOTSTRAP}</script></body></html>\n")
