"""Diversity of generated text: the guard against a policy collapsing onto a few outputs.

A panel of measures over a list of texts (words are `text.split()`), each compared with a baseline panel
(the starting policy's samples) by the collapse guard (collapse_guard.py). Training on one's own samples
shrinks diversity and the tails of the word distribution go first (Alemohammad et al. 2023; Shumailov
et al. 2024), so the panel measures both spread (distinct-n, self-BLEU, entropy) and tails (rare_mass).
"""
from __future__ import annotations

import math
from collections import Counter

PANEL_METRICS = ("distinct_1", "distinct_2", "distinct_3", "self_bleu", "unigram_entropy", "rare_mass")
# self-BLEU measures sameness: it is the one where a lower value means more diverse text
HIGHER_IS_MORE_DIVERSE = {"distinct_1": True, "distinct_2": True, "distinct_3": True, "self_bleu": False,
                          "unigram_entropy": True, "rare_mass": True}
PREFIX = "div_"                       # how the panel's keys appear in a job's records


def distinct_n(texts: list[str], n: int = 2) -> float | None:
    """Distinct-n (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural Conversation
    Models"): distinct word n-grams over all n-grams of the texts, in [0, 1]; None when there are none."""
    total, seen = 0, set()
    for text in texts:
        words = text.split()
        grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else None


def word_counts(texts: list[str]) -> Counter:
    """How often each word occurs over all the texts."""
    counts: Counter = Counter()
    for text in texts:
        counts.update(text.split())
    return counts


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def self_bleu(texts: list[str], max_n: int = 4, limit: int = 200) -> float | None:
    """Self-BLEU (Zhu et al. 2018, "Texygen"): the mean sentence BLEU of each text against all the others as
    references. Higher means the texts are more alike, i.e. LESS diverse (1.0: all the same).

    Sentence BLEU (Papineni et al. 2002): n-gram counts clipped to their largest count in any one
    reference, a brevity penalty against the reference length closest to the hypothesis' (the shorter of
    two equally close), the geometric mean of the n = 1..max_n precisions, with add-one smoothing for
    n >= 2 (BLEU+1, Lin & Och 2004). Texts without words are left out; of the rest the first `limit` are
    used (the cost grows with the square of their number). None when fewer than two texts have words."""
    docs = [words for words in (t.split() for t in texts) if words][:limit]
    if len(docs) < 2:
        return None
    grams = [[_ngrams(words, n) for n in range(1, max_n + 1)] for words in docs]
    # per n-gram, its two largest counts over the texts and which text holds the largest: the largest count
    # among the OTHER texts is then the top one, or the second when the hypothesis itself holds the top
    top: list[dict] = [{} for _ in range(max_n)]
    for i, per_n in enumerate(grams):
        for n, counts in enumerate(per_n):
            for gram, c in counts.items():
                first, holder, second = top[n].get(gram, (0, -1, 0))
                top[n][gram] = (c, i, first) if c > first else (first, holder, max(second, c))
    lengths = [len(words) for words in docs]
    scores = []
    for i, (words, per_n) in enumerate(zip(docs, grams)):
        log_sum = 0.0
        for n, counts in enumerate(per_n):
            matched = sum(min(c, _max_other(top[n][gram], i)) for gram, c in counts.items())
            total = sum(counts.values())
            if n > 0:
                matched, total = matched + 1, total + 1
            if matched == 0:
                log_sum = -math.inf
                break
            log_sum += math.log(matched / total)
        others = lengths[:i] + lengths[i + 1:]
        c = len(words)
        r = min(others, key=lambda x: (abs(x - c), x))
        brevity = 1.0 if c > r else math.exp(1 - r / c)
        scores.append(0.0 if log_sum == -math.inf else brevity * math.exp(log_sum / max_n))
    return sum(scores) / len(scores)


def _max_other(entry: tuple[int, int, int], i: int) -> int:
    first, holder, second = entry
    return second if holder == i else first


def unigram_entropy(texts: list[str]) -> float | None:
    """Shannon entropy, in bits, of the word-unigram distribution of the texts; None when there are no words."""
    counts = word_counts(texts)
    total = sum(counts.values())
    if not total:
        return None
    return sum(c / total * math.log2(total / c) for c in counts.values())     # never -0.0


def head_words(reference: Counter, head_share: float = 0.9) -> set[str]:
    """The smallest set of the reference's most frequent words (ties broken by the word) that covers at
    least `head_share` of its tokens."""
    if not 0 < head_share <= 1:
        raise ValueError(f"head_share must be in (0, 1], got {head_share}")
    total, covered, head = sum(reference.values()), 0, set()
    for word, count in sorted(reference.items(), key=lambda item: (-item[1], item[0])):
        if covered + 1e-9 * total >= head_share * total:      # the tolerance keeps 0.7 * 10 from needing 8
            break
        head.add(word)
        covered += count
    return head


def rare_mass(texts: list[str], reference: Counter, head_share: float = 0.9) -> float | None:
    """The share of the texts' words that fall outside the reference's head (`head_words`); words the
    reference never saw count as rare. Tails vanish first when models train on their own output
    (Shumailov et al. 2024, "AI models collapse when trained on recursively generated data"), so this
    falls as a policy collapses. None when the texts have no words or the reference is empty."""
    counts = word_counts(texts)
    total = sum(counts.values())
    if not total or not sum(reference.values()):
        return None
    head = head_words(reference, head_share)
    return sum(c for word, c in counts.items() if word not in head) / total


def panel(texts: list[str], reference: Counter | None = None) -> dict:
    """Every measure of PANEL_METRICS for the texts (rare_mass None without a reference), the number of
    texts and their mean length in words."""
    words = sum(len(t.split()) for t in texts)
    return {"distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2), "distinct_3": distinct_n(texts, 3),
            "self_bleu": self_bleu(texts), "unigram_entropy": unigram_entropy(texts),
            "rare_mass": rare_mass(texts, reference) if reference is not None else None,
            "texts": len(texts), "mean_words": words / len(texts) if texts else None}


def relative(panel: dict, baseline: dict) -> dict:
    """value / baseline for each metric of PANEL_METRICS where both are numbers and the baseline is not 0."""
    out = {}
    for name in PANEL_METRICS:
        value, base = panel.get(name), baseline.get(name)
        if isinstance(value, (int, float)) and isinstance(base, (int, float)) and base != 0:
            out[name] = value / base
    return out


def prefixed(panel: dict) -> dict:
    """The panel's keys as a job's record holds them (`div_distinct_2`, ...)."""
    return {PREFIX + k: v for k, v in panel.items()}


def unprefixed(record: dict) -> dict:
    """The panel inside a job's record (the `div_` keys, without the prefix)."""
    return {k[len(PREFIX):]: v for k, v in record.items() if k.startswith(PREFIX)}
