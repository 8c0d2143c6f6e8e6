"""Live metrics for an operator: the numbers a job records (metrics.jsonl events, pool state) are also Ray
metrics, which each node's metrics agent serves in Prometheus format (`ray start --metrics-export-port`,
`ray.init(_metrics_export_port=...)`); Ray's dashboard and a Grafana board (cluster/grafana-synthpref.json)
read them while the job runs. Every metric is a gauge named `synthpref_<event>_<field>` (Ray's exporter
adds its `ray_` prefix), tagged with the job (`synthpref_job`: Prometheus keeps `job` for its scrape job),
the run (output folder name) and, where there is one, the pool.

Without Ray (a job that needs no actors) or without a metrics agent nothing is exported and nothing fails.
"""
from __future__ import annotations

import logging
import numbers
import re
import sys
import threading
import time

_GAUGES: dict[str, object] = {}
_TAG_KEYS = ("synthpref_job", "run", "pool")
_LAST: dict[str, float] = {}
_DEFAULTS: dict[str, str] = {}
_VALUES: dict[tuple, float] = {}           # (name, tags) -> the last value, set again every REFRESH_S
_REFRESH: list = []
REFRESH_S = 1.0
log = logging.getLogger(__name__)


def set_job(job: str, run: str) -> None:
    """The job and run (output folder name) every metric of this process is tagged with; the values of an
    earlier job in this process stop being served."""
    _DEFAULTS.update(synthpref_job=job, run=run)
    _VALUES.clear()


def _refresh_forever() -> None:
    """Ray sends a gauge's value once and its agent forgets it after two report intervals: every value is
    set again each REFRESH_S, so a gauge shows its last value for as long as the job runs."""
    while True:
        time.sleep(REFRESH_S)
        for (name, tags), value in list(_VALUES.items()):
            try:
                _GAUGES[name].set(value, tags=dict(tags))
            except Exception:  # a Ray that went away: nothing to serve
                pass


def metric_name(*parts: str) -> str:
    """A Prometheus-safe name: letters, digits and underscores, starting with a letter."""
    name = re.sub(r"[^a-zA-Z0-9_]+", "_", "_".join(p for p in parts if p)).strip("_")
    return name if name[:1].isalpha() else f"m_{name}"


def numbers_of(values: dict, prefix: str = "") -> dict[str, float]:
    """The numeric fields of a record, nested dicts flattened with `_` (booleans and None left out)."""
    out = {}
    for key, value in values.items():
        name = f"{prefix}_{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(numbers_of(value, name))
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def export(event: str, values: dict, **tags: str) -> int:
    """Set gauge synthpref_<event>_<field> for each number of `values`; returns how many were set (0
    without a Ray connection, or when Ray refuses: metrics never fail a job)."""
    ray = sys.modules.get("ray")                   # a process that never imported Ray exports nothing
    if ray is None or not ray.is_initialized():
        return 0
    try:
        from ray.util.metrics import Gauge
        tags = {k: str(tags.get(k, _DEFAULTS.get(k, ""))) for k in _TAG_KEYS}
        count = 0
        for field, value in numbers_of(values).items():
            name = metric_name("synthpref", event, field)
            gauge = _GAUGES.get(name)
            if gauge is None:
                gauge = _GAUGES[name] = Gauge(name, description=f"synthpref {event} event: {field}",
                                              tag_keys=_TAG_KEYS)
            gauge.set(value, tags=tags)
            _VALUES[(name, tuple(sorted(tags.items())))] = value
            count += 1
        if not _REFRESH:
            _REFRESH.append(threading.Thread(target=_refresh_forever, name="synthpref-metrics", daemon=True))
            _REFRESH[0].start()
        return count
    except Exception as exc:  # e.g. a number too large for a float, a Ray client connection
        log.warning("live metrics for %s not exported: %s", event, exc)
        return 0


def export_every(key: str, seconds: float, event: str, values: dict, **tags: str) -> int:
    """`export`, at most once per `seconds` for `key` (for state sampled in a busy loop)."""
    now = time.monotonic()
    if now - _LAST.get(key, -1e9) < seconds:
        return 0
    _LAST[key] = now
    return export(event, values, **tags)
