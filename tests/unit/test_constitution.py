"""Constitutions: every shipped file validates, bad files are refused naming the place, principles are drawn
the same way on every run, and constitutional templates need (and fill) the principle."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from synthpref.config import ConfigError
from synthpref.judging import templates
from synthpref.judging.constitution import BUILTIN_DIR, load_constitution, parse_constitution

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(BUILTIN_DIR.glob("*.yaml")) + sorted((REPO / "configs" / "constitutions").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_constitution_validates(path):
    c = load_constitution(str(path))
    assert c.principles and len({p.id for p in c.principles}) == len(c.principles)
    for shot in c.few_shot:
        assert c.by_id(shot.principle)


def test_default_constitution_has_sixteen_principles_over_the_named_harms():
    c = load_constitution("default")
    ids = {p.id for p in c.principles}
    assert len(c.principles) == 16
    assert {"physical-harm", "deception", "illegal-activity", "demeaning-content", "helpfulness"} <= ids
    assert c.few_shot, "the default ships a few-shot example"


GOOD = {"name": "t", "version": 1,
        "principles": [{"id": "a", "critique": "c", "revision": "r", "comparison": "q"}]}


@pytest.mark.parametrize("change, place", [
    (lambda t: t["principles"][0].pop("revision"), "principles.0.revision"),
    (lambda t: t["principles"].append(dict(t["principles"][0])), "duplicate ids ['a']"),
    (lambda t: t["principles"][0].update(extra="x"), "unknown keys ['extra']"),
    (lambda t: t.update(principles=[]), "principles: a non-empty list"),
    (lambda t: t.update(few_shot=[{"prompt": "p", "response": "r", "principle": "zz", "critique": "c",
                                   "revision": "r"}]), "few_shot.0.principle: 'zz'"),
    (lambda t: t["principles"][0].update(comparison="  "), "principles.0.comparison"),
])
def test_bad_constitution_is_refused_naming_the_place(change, place):
    import copy
    tree = copy.deepcopy(GOOD)
    change(tree)
    with pytest.raises(ConfigError, match=place.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        parse_constitution(tree, "mine.yaml")


def test_principles_are_drawn_stably_and_roughly_uniformly():
    c = load_constitution("default")
    draws = [c.draw(0, f"pair{i}").id for i in range(3200)]
    assert draws == [c.draw(0, f"pair{i}").id for i in range(3200)]          # a rerun draws the same
    counts = Counter(draws)
    assert len(counts) == 16 and min(counts.values()) > 200 / 2 and max(counts.values()) < 200 * 1.5
    assert [c.draw(1, f"pair{i}").id for i in range(50)] != draws[:50]       # another seed, other draws


def test_constitutional_templates_need_and_fill_the_principle():
    tpl = templates.get_template("", "pairwise", "logprob", constitutional=True)
    assert tpl.name == "constitutional-pairwise-logprob"
    msgs = templates.pairwise_messages(tpl, [{"role": "user", "content": "hi"}], "one", "two",
                                       principle="Which answer is kinder?")
    assert "Which answer is kinder?" in msgs[1]["content"] and "(A) one" in msgs[1]["content"]
    with pytest.raises(ValueError, match="no {principle} placeholder"):
        templates.get_template("pairwise-logprob", "pairwise", "logprob", constitutional=True)
    with pytest.raises(ValueError, match="set judging.constitution"):
        templates.get_template("constitutional-pairwise-text", "pairwise", "text")
