"""Figures for the report, built with plotly's figure objects (which check every attribute) and kept as
figure JSON. Each trace of a curve names its source in `meta` ("event/field"), so a reader of the page
can count its points against metrics.jsonl."""
from __future__ import annotations

import html
import math

from synthpref.monitor.report_data import Series
from synthpref.monitor.report_html import Plot

COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bc4c00", "#0a7d8c", "#bf3989", "#6e7781", "#4d2d00", "#116329"]
def text(value) -> str:
    """Run text as plotly shows it literally (plotly reads <b>, <a href=...> and entities in labels)."""
    return html.escape(str(value), quote=False)


AXIS = {"gridcolor": "#eaeef2", "zerolinecolor": "#d0d7de", "linecolor": "#d0d7de", "automargin": True}


def _figure(data: list, title: str, **layout) -> dict:
    import plotly.graph_objects as go
    base = {"template": "none", "title": {"text": text(title), "font": {"size": 13}, "x": 0.02, "xanchor": "left"},
            "margin": {"l": 56, "r": 24, "t": 40, "b": 44}, "font": {"size": 11, "color": "#1f2328"},
            "paper_bgcolor": "#ffffff", "plot_bgcolor": "#ffffff", "colorway": COLORS,
            "legend": {"orientation": "h", "y": -0.22, "x": 0}, "xaxis": dict(AXIS), "yaxis": dict(AXIS)}
    for key, value in layout.items():
        base[key] = {**base[key], **value} if isinstance(base.get(key), dict) and isinstance(value, dict) else value
    return go.Figure(data=data, layout=base).to_plotly_json()


def _line(series: Series, name: str, axis: str = "y") -> dict:
    import plotly.graph_objects as go
    mode = "lines+markers" if len(series.steps) <= 60 else "lines"
    return go.Scatter(x=list(series.steps), y=list(series.values), name=text(name), meta=series.metric, mode=mode,
                      yaxis=axis, marker={"size": 5}, connectgaps=False,
                      hovertemplate=f"{text(name)}<br>%{{x}}: %{{y:.4g}}<extra></extra>")


def line_plot(metric: str, title: str, series: list[Series], x_title: str = "step",
              secondary: list[Series] = (), wide: bool = False) -> Plot:
    """One line per series (a trace per event/field), x = step; `secondary` series on a right-hand axis
    (e.g. gold reward beside the proxy's, on another scale)."""
    traces = [_line(s, s.field if len({x.event for x in series}) == 1 else s.metric) for s in series]
    traces += [_line(s, f"{s.field} (right axis)", "y2") for s in secondary]
    extra = {}
    if secondary:
        extra["yaxis2"] = {**AXIS, "overlaying": "y", "side": "right", "showgrid": False,
                           "title": {"text": text(", ".join(s.field for s in secondary))}}
    xs = [x for s in [*series, *secondary] for x in s.steps]
    xaxis = {"title": {"text": text(x_title)}}
    if xs and all(isinstance(x, int) for x in xs) and max(xs) - min(xs) <= 12:
        xaxis["dtick"] = 1                       # a few iterations or steps: no half ticks
    return Plot(metric, _figure(traces, title, xaxis=xaxis, showlegend=len(traces) > 1, **extra), wide=wide)


def bar_plot(metric: str, title: str, categories: list[str], bars: dict[str, list], y_title: str = "",
             y_range: tuple | None = None, wide: bool = False) -> Plot:
    """Grouped bars: one trace per entry of `bars` (its values follow `categories`)."""
    import plotly.graph_objects as go
    traces = [go.Bar(x=[text(c) for c in categories], y=list(values), name=text(name), meta=f"{metric}:{name}",
                     hovertemplate=f"{text(name)}<br>%{{x}}: %{{y:.4g}}<extra></extra>")
              for name, values in bars.items()]
    yaxis = {"title": {"text": text(y_title)}}
    if y_range:
        yaxis["range"] = list(y_range)
    return Plot(metric, _figure(traces, title, barmode="group", yaxis=yaxis, showlegend=len(traces) > 1,
                                xaxis={"type": "category"}), wide=wide)


def heatmap_plot(metric: str, title: str, labels: list[str], matrix: list[list], z_title: str = "") -> Plot:
    """A square matrix over `labels` (e.g. how often each two judges agree), its values printed in the cells."""
    import plotly.graph_objects as go
    cells = [["" if v is None else f"{v:.2f}" for v in row] for row in matrix]
    names = [text(n) for n in labels]
    trace = go.Heatmap(z=matrix, x=names, y=names, zmin=0, zmax=1, colorscale="Blues", text=cells,
                       texttemplate="%{text}", meta=metric, colorbar={"title": {"text": text(z_title)}},
                       hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>")
    return Plot(metric, _figure([trace], title, xaxis={"type": "category", "showgrid": False},
                                yaxis={"type": "category", "showgrid": False, "autorange": "reversed"}))


def histogram_plot(metric: str, title: str, values: list[float], x_title: str, bins: int = 20) -> Plot:
    """A histogram binned here (the page carries counts, not every value); its bars' heights sum to the
    number of finite values."""
    import plotly.graph_objects as go
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    width = (high - low) / bins
    counts = [0] * bins
    for v in finite:
        counts[min(bins - 1, int((v - low) / width))] += 1
    centers = [low + width * (i + 0.5) for i in range(bins)]
    trace = go.Bar(x=centers, y=counts, width=[width * 0.95] * bins, meta=metric, name=text(x_title),
                   customdata=[[low + width * i, low + width * (i + 1)] for i in range(bins)],
                   hovertemplate="%{customdata[0]:.3f} – %{customdata[1]:.3f}: %{y}<extra></extra>")
    return Plot(metric, _figure([trace], f"{title} (n={len(finite)})", xaxis={"title": {"text": text(x_title)}},
                                yaxis={"title": {"text": "count"}}, bargap=0.02, showlegend=False))
