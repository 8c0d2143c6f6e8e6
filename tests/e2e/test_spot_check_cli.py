"""`synthpref spot-check export` and `import` as a user runs them, on the hand-built run of the unit tests."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.spot_check_runs import HUMAN, make_run, shown_verdict

pytestmark = pytest.mark.e2e


def spot_check(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synthpref.cli", "spot-check", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_export_then_import_from_the_command_line(tmp_path):
    root = tmp_path / "labels"
    ids = make_run(root)
    export = spot_check("export", root, "--n", 10, "--seed", 1, "--control-fraction", 0, "--min-per-domain", 0)
    assert export.returncode == 0, export.stderr
    lines = export.stdout.splitlines()
    assert lines[0] == "10 of 10 pairs queued (seed 1):"
    assert lines[1:5] == ["  undecided       2", "  order_flip      2", "  disagreement    2", "  low_confidence  4"]
    assert f"label_studio_tasks   {root / 'spot_checks' / 'label_studio_tasks.json'}" in lines
    rows = {r["pair_id"]: r for r in map(json.loads, (root / "spot_checks" / "queue.jsonl").read_text().splitlines())}
    reviews = tmp_path / "reviews.jsonl"
    reviews.write_text("".join(json.dumps({"pair_id": ids[n], "verdict": shown_verdict(rows[ids[n]], h)}) + "\n"
                               for n, h in HUMAN.items()))
    imported = spot_check("import", root, reviews, "--threshold", 0.6, "--min-reviews", 2)
    assert imported.returncode == 0, imported.stderr
    out = imported.stdout
    assert out.startswith(f"10 reviews from {reviews} (0 quarantined)")
    table = {line[:28].strip(): line[28:].split() for line in out.splitlines()[3:]}
    assert table["judge j2"] == ["37.5%", "8", "0", "1", "1"]                 # agree, decided, ties, failed, human ties
    assert table["jury rule weighted"][:2] == ["71.4%", "7"] and table["domain chat *"][0] == "50.0%"
    assert "capability ceiling (agreement < 0.6 with >= 2 decided reviews): (untagged), chat" in out
    assert json.loads((root / "summary.json").read_text())["spot_checks"]["flagged_domains"] == ["(untagged)", "chat"]
