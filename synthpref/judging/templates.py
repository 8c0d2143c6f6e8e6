"""Versioned judge prompt templates; every verdict records the hash of the template that produced it.

The default pairwise wording follows MT-Bench's pairwise judge (Zheng et al., 2023, "Judging LLM-as-a-
Judge") and asks the judge to ignore position and length; the logprob variant asks for a single letter
so that P(first) can be read from one next-token distribution (Lee et al., 2023, "RLAIF").
A template may also be a YAML file path with the same fields as `Template`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from synthpref.errors import MissingInput


@dataclass(frozen=True)
class Template:
    name: str
    version: int
    kind: str              # pairwise | pointwise
    verdict: str           # logprob | text
    system: str
    user: str              # placeholders: {conversation}, {first}, {second} | {response}; {reasoning}
    choices: tuple = ()    # logprob verdicts: labels read from the next-token distribution

    @property
    def hash(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


_FAIRNESS = ("Do not let the order in which the responses are shown influence you, and do not prefer a "
             "response because it is longer: judge helpfulness, honesty and harmlessness only.")

PAIRWISE_LOGPROB = Template(
    name="pairwise-logprob", version=1, kind="pairwise", verdict="logprob",
    system="You are an impartial judge comparing two responses to the same conversation. " + _FAIRNESS,
    user=("[Conversation]\n{conversation}\n\n[Response A]\n{first}\n\n[Response B]\n{second}\n\n"
          "Which response is better? Answer with a single letter, A or B."),
    choices=("A", "B"),
)

PAIRWISE_TEXT = Template(
    name="pairwise-text", version=1, kind="pairwise", verdict="text",
    system="You are an impartial judge comparing two responses to the same conversation. " + _FAIRNESS,
    user=("[Conversation]\n{conversation}\n\n[Response A]\n{first}\n\n[Response B]\n{second}\n\n"
          "{reasoning}End with your verdict in exactly this form: [[A]] if A is better, [[B]] if B is "
          "better, [[TIE]] if they are equally good."),
)

POINTWISE_LOGPROB = Template(
    name="pointwise-logprob", version=1, kind="pointwise", verdict="logprob",
    system="You are an impartial judge rating one response to a conversation. " + _FAIRNESS,
    user=("[Conversation]\n{conversation}\n\n[Response]\n{response}\n\n"
          "Is this response helpful, honest and harmless? Answer Yes or No."),
    choices=("Yes", "No"),
)

POINTWISE_TEXT = Template(
    name="pointwise-text", version=1, kind="pointwise", verdict="text",
    system="You are an impartial judge rating one response to a conversation. " + _FAIRNESS,
    user=("[Conversation]\n{conversation}\n\n[Response]\n{response}\n\n"
          "{reasoning}Rate the response from 1 to 10 and end with the rating in exactly this form: [[N]]."),
)

POINTWISE_RATING = Template(
    name="pointwise-rating-logprob", version=1, kind="pointwise", verdict="logprob",
    system="You are an impartial judge rating one response to a conversation. " + _FAIRNESS,
    user=("[Conversation]\n{conversation}\n\n[Response]\n{response}\n\n"
          "Rate how helpful, honest and harmless the response is on a scale from 0 (worst) to 9 (best). "
          "Answer with a single digit."),
    choices=tuple(str(i) for i in range(10)),       # direct RLAIF's expected rating (expected_score.py)
)

_ADDITIVE = ("[Conversation]\n{conversation}\n\n[Response]\n{response}\n\n"
             "Score the response by adding points, one for each of these that holds:\n"
             "1. It is on topic: it responds to what the user asked.\n"
             "2. It deals with most of the request, even if not fully or perfectly.\n"
             "3. It gives a useful answer to the core of the request.\n"
             "4. It is complete, clear and well organised, written as a helpful assistant would.\n"
             "5. It is excellent: accurate, insightful and to the point, with nothing superfluous.\n")

# Self-rewarding's judge (Yuan et al. 2024): an additive 0-5 score, one point per criterion met.
ADDITIVE_TEXT = Template(
    name="additive-5-text", version=1, kind="pointwise", verdict="text",
    system="You are a careful reviewer scoring one response to a conversation. " + _FAIRNESS,
    user=_ADDITIVE + "{reasoning}End with the total in exactly this form: [[N]], N from 0 to 5.",
)

ADDITIVE_LOGPROB = Template(
    name="additive-5-logprob", version=1, kind="pointwise", verdict="logprob",
    system="You are a careful reviewer scoring one response to a conversation. " + _FAIRNESS,
    user=_ADDITIVE + "Answer with the total, a single digit from 0 to 5.",
    choices=tuple(str(i) for i in range(6)),        # the expected total (expected_score.py)
)

# Constitutional AI's feedback model (Bai et al. 2022): a multiple-choice comparison under one principle,
# drawn per pair from the run's constitution (judging.constitution); {principle} is its comparison question.
_CONSTITUTIONAL_SYSTEM = ("You are comparing two answers an AI assistant might give to the same conversation, by one "
                          "principle only. Do not let the order of the answers or their length influence you.")
_CONSTITUTIONAL = ("[Conversation]\n{conversation}\n\nConsider the following question about the assistant's "
                   "next answer. {principle}\n\nOptions:\n(A) {first}\n(B) {second}\n\n")

CONSTITUTIONAL_LOGPROB = Template(
    name="constitutional-pairwise-logprob", version=1, kind="pairwise", verdict="logprob",
    system=_CONSTITUTIONAL_SYSTEM, user=_CONSTITUTIONAL + "Answer with a single letter, A or B.{reasoning}",
    choices=("A", "B"),
)

CONSTITUTIONAL_TEXT = Template(
    name="constitutional-pairwise-text", version=1, kind="pairwise", verdict="text",
    system=_CONSTITUTIONAL_SYSTEM,
    user=_CONSTITUTIONAL + ("{reasoning}End with your verdict in exactly this form: [[A]] or [[B]], or [[TIE]] if "
                            "neither is better by this principle."),
)

BUILTIN = {t.name: t for t in (PAIRWISE_LOGPROB, PAIRWISE_TEXT, POINTWISE_LOGPROB, POINTWISE_TEXT, POINTWISE_RATING,
                               ADDITIVE_TEXT, ADDITIVE_LOGPROB, CONSTITUTIONAL_LOGPROB, CONSTITUTIONAL_TEXT)}
REASONING = "First explain your reasoning briefly. "
# Chain of thought before a logprob verdict: the judge writes its reasoning, then is asked for the letter in a
# second turn, whose next-token distribution gives the probabilities (constitutional AI's CoT labels).
THINK = (" Before you answer, think it through step by step: write out your reasoning now; you will be asked for "
         "the letter after it.")
COT_FOLLOW_UP = "So which option is better by the principle? Answer with a single letter."
SCORE_RANGES = {"additive-5-text": (0, 5)}          # text ratings: [[N]] within this range; others 1-10


def score_range(tpl: Template) -> tuple[float, float]:
    """The range of a pointwise text template's [[N]] rating."""
    return SCORE_RANGES.get(tpl.name, (1, 10))


def get_template(name: str, kind: str, verdict: str, constitutional: bool = False) -> Template:
    """A built-in template by name, a YAML file by path, or the default for (kind, verdict); with a
    constitution (principle-conditioned comparisons) the default is the constitutional one, and the
    template must have a {principle} placeholder."""
    if not name:
        name = f"constitutional-{kind}-{verdict}" if constitutional else f"{kind}-{verdict}"
    if name in BUILTIN:
        tpl = BUILTIN[name]
    elif Path(name).suffix in (".yaml", ".yml"):
        if not Path(name).exists():
            raise MissingInput(f"judge template file {name} does not exist")
        fields = yaml.safe_load(Path(name).read_text())
        fields["choices"] = tuple(fields.get("choices", ()))
        tpl = Template(**fields)
    else:
        raise ValueError(f"unknown judge template {name!r}; built-in: {sorted(BUILTIN)} or a .yaml path")
    if tpl.kind != kind or tpl.verdict != verdict:
        raise ValueError(f"template {name!r} is for {tpl.kind}/{tpl.verdict}, the judge needs {kind}/{verdict}")
    from synthpref.judging.expected_score import is_rating_scale
    rating = kind == "pointwise" and is_rating_scale(tpl.choices)
    if constitutional and "{principle}" not in tpl.user:
        raise ValueError(f"template {name!r} has no {{principle}} placeholder, which judging.constitution needs "
                         f"(the built-in constitutional-pairwise-{verdict} has one)")
    if not constitutional and "{principle}" in tpl.user:
        raise ValueError(f"template {name!r} compares under a principle: set judging.constitution")
    if verdict == "logprob" and len(tpl.choices) != 2 and not rating:
        raise ValueError(f"template {name!r}: a logprob verdict needs exactly two choices, or (pointwise) a "
                         f"numeric rating scale such as 0-9")
    return tpl


def render_conversation(messages: list[dict]) -> str:
    names = {"user": "User", "assistant": "Assistant", "system": "System"}
    return "\n".join(f"{names.get(m['role'], m['role'])}: {m['content']}" for m in messages)


def pairwise_messages(tpl: Template, conversation: list[dict], first: str, second: str,
                      reasoning: bool | str = False, principle: str | None = None) -> list[dict]:
    """`reasoning`: True asks for reasoning before the verdict, a text is put in its place (THINK);
    `principle`: the comparison question of the pair's principle (constitutional templates)."""
    hint = reasoning if isinstance(reasoning, str) else REASONING if reasoning else ""
    user = tpl.user.format(conversation=render_conversation(conversation), first=first, second=second,
                           reasoning=hint, principle=principle or "")
    return [{"role": "system", "content": tpl.system}, {"role": "user", "content": user}]


def pointwise_messages(tpl: Template, conversation: list[dict], response: str, reasoning: bool = False) -> list[dict]:
    user = tpl.user.format(conversation=render_conversation(conversation), response=response,
                           reasoning=REASONING if reasoning else "")
    return [{"role": "system", "content": tpl.system}, {"role": "user", "content": user}]
