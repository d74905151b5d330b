"""The classification report's advice: every text a user acts on, from hand-made statistics."""

import math

import pytest

from tailwise.bench._advice import COLUMNS, recommend, suggest_thresholds


def _stats(**rows):
    """rows: label -> (balanced mean, balanced std[, overall, natural, few])."""
    out = {}
    for label, vals in rows.items():
        bal, sd = vals[0], vals[1]
        overall = vals[2] if len(vals) > 2 else bal
        natural = vals[3] if len(vals) > 3 else bal
        few = vals[4] if len(vals) > 4 else bal
        out[label] = {key: (bal, sd) for key, _ in COLUMNS}
        out[label]["overall"] = (overall, sd)
        out[label]["natural_acc"] = (natural, sd)
        out[label]["few"] = (few, sd)
        out[label]["many"] = (math.nan, math.nan)
    return out


def test_cross_entropy_only_says_there_is_nothing_to_compare():
    text = recommend(_stats(cross_entropy=(70.0, 1.0)), ["cross_entropy"], 3, False)
    assert "only plain cross-entropy was run" in text
    assert "beat" not in text  # the old text claimed no tail-aware loss beat it


def test_nothing_wins_keeps_cross_entropy():
    stats = _stats(cross_entropy=(80.0, 1.0), focal=(78.0, 1.0))
    text = recommend(stats, ["cross_entropy", "focal"], 3, False)
    assert "keep plain cross-entropy" in text and "`focal`" in text and "-2.0" in text


def test_gap_within_the_seed_spread_is_refused():
    stats = _stats(cross_entropy=(80.0, 2.5), balanced_softmax=(82.0, 1.0))
    text = recommend(stats, ["cross_entropy", "balanced_softmax"], 3, False)
    assert text.startswith("**Recommendation:** none:")
    assert "not more than the seed spread (± 2.5)" in text and "+2.0" in text


def test_one_seed_names_the_leader_without_recommending():
    stats = _stats(cross_entropy=(80.0, 0.0), balanced_softmax=(85.0, 0.0))
    text = recommend(stats, ["cross_entropy", "balanced_softmax"], 1, False)
    assert "none yet" in text and "one seed" in text and "`balanced_softmax`" in text


def test_real_gain_states_overall_and_natural_changes():
    # balanced +7.4 but overall -9.3 on an imbalanced test split (the CSV user's case)
    stats = _stats(cross_entropy=(70.0, 1.0, 86.8, 86.8, 40.0),
                   balanced_softmax=(77.4, 1.2, 77.5, 77.5, 70.0))
    text = recommend(stats, ["cross_entropy", "balanced_softmax"], 3, True)
    assert "`balanced_softmax`" in text and "+7.4 points over plain cross-entropy" in text
    assert "overall -9.3" in text and "few-shot +30.0" in text
    assert "imbalanced test split overall accuracy falls by 9.3 points" in text


def test_balanced_test_split_reports_natural_loss():
    stats = _stats(cross_entropy=(70.0, 1.0, 70.0, 90.0), balanced_softmax=(80.0, 1.0, 80.0, 85.0))
    text = recommend(stats, ["cross_entropy", "balanced_softmax"], 3, False)
    assert "natural-distribution -5.0" in text and "loses 5.0 points" in text


def test_ties_with_the_winner_are_named():
    stats = _stats(cross_entropy=(70.0, 1.0), a=(80.0, 1.0), b=(79.5, 1.0))
    text = recommend(stats, ["cross_entropy", "a", "b"], 3, False)
    assert "`a`" in text and "Within the seed spread of it: `b`" in text


def test_no_baseline_in_the_grid():
    stats = _stats(focal=(70.0, 1.0), balanced_softmax=(80.0, 1.0))
    text = recommend(stats, ["focal", "balanced_softmax"], 3, False)
    assert "no plain cross-entropy run" in text and "`balanced_softmax`" in text


@pytest.mark.parametrize("counts", [[124, 80, 51, 33, 21, 14, 9, 5, 3, 2],
                                    [6000, 3596, 2156, 1292, 774, 464, 278, 166, 100, 60], [50, 40, 30]])
def test_suggested_thresholds_fill_every_group(counts):
    many, few = suggest_thresholds(counts)
    assert few <= many
    assert any(c > many for c in counts) and any(c < few for c in counts)
