"""The diversity panel, the collapse guard and its config, with answers worked out by hand."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest

from synthpref.config import CollapseGuardConfig, ConfigError, PPOConfig, RFTConfig, load_config
from synthpref.monitor.collapse_guard import check_collapse
from synthpref.monitor.diversity import (HIGHER_IS_MORE_DIVERSE, PANEL_METRICS, distinct_n, head_words, panel,
                                         prefixed, rare_mass, relative, self_bleu, unigram_entropy, unprefixed,
                                         word_counts)

TRAIN_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "train"


def test_distinct_n_and_word_counts():
    texts = ["a b a b", "a b"]
    assert distinct_n(texts, 1) == pytest.approx(2 / 6)        # a b a b a b: two types
    assert distinct_n(texts, 2) == pytest.approx(2 / 4)        # ab ba ab | ab
    assert distinct_n(texts, 3) == pytest.approx(2 / 2)        # aba bab
    assert distinct_n(["a"], 2) is None
    assert word_counts(["a b", " b  c "]) == Counter({"a": 1, "b": 2, "c": 1})


def test_self_bleu_of_identical_and_disjoint_texts():
    assert self_bleu(["x y z w", "x y z w", "x y z w"]) == pytest.approx(1.0, abs=1e-12)
    assert self_bleu(["a b c d", "e f g h"]) == 0.0            # no unigram matches: log precision -inf


def test_self_bleu_of_a_partial_overlap_by_hand():
    # each against the other: p1 = 2/4, p2 = (1+1)/(3+1), p3 = (0+1)/(2+1), p4 = (0+1)/(1+1), equal lengths
    assert self_bleu(["a b c d", "a b e f"]) == pytest.approx((1 / 24) ** 0.25, abs=1e-9)
    assert self_bleu(["a b c d", "a b e f"], max_n=1) == pytest.approx(0.5, abs=1e-9)


def test_self_bleu_clips_counts_and_penalises_brevity():
    # "a a a" vs "a": p1 = 1/3 (3 a's clipped to 1), p2 = (0+1)/(2+1), p3 = (0+1)/(1+1), p4 = 1/1, longer: BP 1
    # "a" vs "a a a": every precision 1, BP = exp(1 - 3/1)
    expected = ((1 / 3 * 1 / 3 * 1 / 2) ** 0.25 + math.exp(-2)) / 2
    assert self_bleu(["a a a", "a"]) == pytest.approx(expected, abs=1e-9)


def test_self_bleu_references_exclude_the_hypothesis_itself():
    # "a a" vs {"a", "b"}: p1 = 1/2 (its own two a's are no reference), p2 = (0+1)/(1+1), p3 = p4 = 1: (1/4)^(1/4)
    # "a" vs {"a a", "b"}: all 1, closest reference length 1: BP 1;  "b" vs {"a a", "a"}: p1 = 0
    assert self_bleu(["a a", "a", "b"]) == pytest.approx((0.5 ** 0.5 + 1 + 0) / 3, abs=1e-9)
    # two equal holders of the top count: each sees the other's
    assert self_bleu(["a a", "a a", "a"]) == pytest.approx((1 + 1 + math.exp(-1)) / 3, abs=1e-9)


def test_self_bleu_leaves_out_empty_texts_and_caps_the_count():
    assert self_bleu(["", "x y", "   "]) is None
    assert self_bleu(["", "a b c d", "a b e f"]) == pytest.approx((1 / 24) ** 0.25, abs=1e-9)
    assert self_bleu(["a b c d", "a b e f", "a b c d"], limit=2) == pytest.approx((1 / 24) ** 0.25, abs=1e-9)
    assert self_bleu(["a b c d", "a b e f", "a b c d"]) > (1 / 24) ** 0.25


def test_unigram_entropy_in_bits():
    assert unigram_entropy(["a a b b"]) == pytest.approx(1.0)
    assert math.copysign(1, unigram_entropy(["a a", "a a"])) == 1.0 and unigram_entropy(["a a a a"]) == 0.0
    assert unigram_entropy(["a b", "c d"]) == pytest.approx(2.0)
    assert unigram_entropy(["", " "]) is None


def test_rare_mass_against_a_hand_built_reference():
    reference = Counter({"the": 5, "a": 3, "cat": 1, "dog": 1})       # 10 tokens
    # 90% = 9 tokens: the (5) + a (8) + cat (9; cat before dog, an equal count, by the word)
    assert head_words(reference, 0.9) == {"the", "a", "cat"}
    assert head_words(reference, 0.7) == {"the", "a"}                  # 7 tokens: 5 is short, 8 covers it
    assert head_words(reference, 0.5) == {"the"}
    texts = ["the dog sat", "a cat"]                                   # dog: in the tail, sat: never seen
    assert rare_mass(texts, reference) == pytest.approx(2 / 5)
    assert rare_mass(texts, reference, head_share=0.5) == pytest.approx(4 / 5)
    assert rare_mass(texts, reference, head_share=1.0) == pytest.approx(1 / 5)
    assert rare_mass([""], reference) is None
    assert rare_mass(texts, Counter()) is None
    with pytest.raises(ValueError):
        rare_mass(texts, reference, head_share=0)


def test_panel_keys_and_values():
    p = panel(["a b", "a c"])
    assert set(p) == {*PANEL_METRICS, "texts", "mean_words"}
    assert p["distinct_1"] == pytest.approx(3 / 4) and p["distinct_2"] == 1.0 and p["distinct_3"] is None
    assert p["self_bleu"] == pytest.approx(0.25 ** 0.25)             # p1 = 1/2, p2 = 1/2, p3 = p4 = 1
    assert p["unigram_entropy"] == pytest.approx(1.5)                  # a 1/2, b 1/4, c 1/4
    assert p["rare_mass"] is None and p["texts"] == 2 and p["mean_words"] == 2.0
    assert panel(["a b", "a c"], Counter({"a": 9, "b": 1}))["rare_mass"] == pytest.approx(2 / 4)   # head {a}
    assert panel([])["texts"] == 0 and panel([])["mean_words"] is None
    assert set(HIGHER_IS_MORE_DIVERSE) == set(PANEL_METRICS)
    assert [m for m, higher in HIGHER_IS_MORE_DIVERSE.items() if not higher] == ["self_bleu"]
    assert unprefixed({"iteration": 1, **prefixed(p)}) == p


def test_relative_to_a_baseline():
    now = {"distinct_2": 0.2, "self_bleu": 0.6, "rare_mass": None, "unigram_entropy": 1.0, "texts": 4}
    base = {"distinct_2": 0.4, "self_bleu": 0.3, "rare_mass": 0.1, "unigram_entropy": 0, "texts": 2}
    assert relative(now, base) == pytest.approx({"distinct_2": 0.5, "self_bleu": 2.0})


def test_guard_fires_below_the_fraction_of_the_baseline():
    base = {"distinct_2": 0.4}
    at = check_collapse({"distinct_2": 0.2}, base, "distinct_2", 0.5, "iteration 3")
    assert not at.fired and at.threshold == pytest.approx(0.2)         # at the threshold: not below it
    fell = check_collapse({"distinct_2": 0.12}, base, "distinct_2", 0.5, "iteration 3")
    assert fell.fired and (fell.value, fell.baseline) == (0.12, 0.4)
    assert fell.message == ("collapse guard: distinct_2 fell to 0.120 at iteration 3, below 0.5 x the baseline "
                            "0.400 (threshold 0.200)")
    assert not check_collapse({"distinct_2": 0.9}, base, "distinct_2", 1.0, "iteration 2").fired


def test_guard_compares_one_minus_self_bleu():
    base = {"self_bleu": 0.5}                    # diversity 0.5; half of it is 0.25, i.e. self-BLEU 0.75
    assert check_collapse({"self_bleu": 0.75}, base, "self_bleu", 0.5, "step 4").threshold == pytest.approx(0.75)
    assert not check_collapse({"self_bleu": 0.75}, base, "self_bleu", 0.5, "step 4").fired
    rose = check_collapse({"self_bleu": 0.8}, base, "self_bleu", 0.5, "step 4")
    assert rose.fired and "self_bleu rose to 0.800 at step 4" in rose.message
    assert not check_collapse({"self_bleu": 0.1}, base, "self_bleu", 0.5, "step 4").fired   # more diverse


def test_guard_never_fires_without_numbers():
    none_now = check_collapse({"rare_mass": None}, {"rare_mass": 0.3}, "rare_mass", 0.5, "iteration 2")
    assert not none_now.fired and "no value" in none_now.message and "iteration 2" in none_now.message
    no_base = check_collapse({"rare_mass": 0.0}, {}, "rare_mass", 0.5, "iteration 2")
    assert not no_base.fired and "no baseline value" in no_base.message
    with pytest.raises(ValueError, match="distinct_9"):
        check_collapse({}, {}, "distinct_9", 0.5, "iteration 2")


def test_guard_config_checks_min_fraction_and_job_defaults():
    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match="guard.min_fraction"):
            CollapseGuardConfig(min_fraction=bad).check("guard")
    CollapseGuardConfig(min_fraction=1.0).check("guard")
    assert CollapseGuardConfig().action == "stop" and CollapseGuardConfig().metric == "distinct_2"
    assert RFTConfig().guard.action == "warn" and PPOConfig().guard.action == "warn"
    with pytest.raises(ConfigError, match="guard.min_fraction"):           # validate reaches the nested section
        load_config(RFTConfig, TRAIN_CONFIGS / "rft-demo.yaml", ["guard.min_fraction=1.5"])
    with pytest.raises(ConfigError, match="guard.metric"):
        load_config(RFTConfig, TRAIN_CONFIGS / "rft-demo.yaml", ["guard.metric=bleu"])
    cfg = load_config(RFTConfig, TRAIN_CONFIGS / "rft-demo.yaml", ["guard.action=stop", "guard.metric=self_bleu"])
    assert (cfg.guard.action, cfg.guard.metric) == ("stop", "self_bleu")


def test_rft_guard_state_and_summary():
    from synthpref.algorithms.rft import guard_check, new_guard_state, summary_lines

    cfg = load_config(RFTConfig, TRAIN_CONFIGS / "rft-demo.yaml", ["guard.action=stop"])
    guard = new_guard_state(cfg)
    row = {"mean_score": 1.0, "best_score": 2.0, "kept": 3, "sft_loss_first": 1.0, "sft_loss_last": 0.5,
           "kl_to_start": 0.01}
    first = {"iteration": 1, **row, "div_distinct_2": 0.4}
    assert guard_check(cfg, first, first, guard) is None and first["guard_fired"] is False
    second = {"iteration": 2, **row, "div_distinct_2": 0.12}
    message = guard_check(cfg, second, first, guard)
    assert message.startswith("collapse guard: distinct_2 fell to 0.120 at iteration 2") and second["guard_fired"]
    assert (guard["fired_at"], guard["fired"], guard["message"]) == (2, [2], message)
    lines = summary_lines({"iterations": [first, second], "guard": guard, "policy_dir": "p", "output_dir": "o"})
    assert "distinct_2 of each iteration's samples: 0.400 -> 0.120" in lines
    assert f"collapse guard stopped the run at iteration 2: {message}" in lines


def test_ppo_summary_names_a_guard_that_warned():
    from synthpref.algorithms.ppo_report import summary_lines

    guard = {"metric": "distinct_2", "min_fraction": 0.5, "action": "warn", "fired_at": 4, "fired": [4, 6],
             "message": "collapse guard: distinct_2 fell to 0.100 at step 4, ..."}
    lines = summary_lines({"steps": [], "guard": guard, "policy_dir": "p", "output_dir": "o"})
    assert "collapse guard warned at steps 4, 6; the first time: collapse guard: distinct_2 fell to 0.100 at step 4, ..." in lines
