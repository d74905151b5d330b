"""The classification report: a table of the whole grid and advice a user can act on.

Rules (docs/bench.md, "Reading the report"):

* one row per configuration; losses that are the same objective share a row naming both;
* one seed: plain numbers, no ``±`` (there is no spread to show);
* the recommendation is drawn from the whole grid (losses, samplers, post-hoc adjustment) by
  balanced accuracy, and states the change against plain cross-entropy in balanced, few-shot,
  medium, many-shot, overall (the test split as it is) and natural-distribution accuracy;
* it refuses to recommend when the gap to cross-entropy is not larger than the seed spread
  (the larger of the two standard deviations), and says so; with one seed it only names the
  leader; with cross-entropy alone, or when nothing beats it, it says exactly that;
* an empty shot group is explained, with ``--many-threshold`` / ``--few-threshold`` values that
  would fill it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ._report import mean_std, pyplot, save_figure

__all__ = ["classification_report", "recommend", "suggest_thresholds"]

COLUMNS = (("many", "many"), ("medium", "medium"), ("few", "few"), ("overall", "overall"),
           ("balanced_acc", "balanced"), ("natural_acc", "natural"))
BASELINE = "cross_entropy"


def _label(r: Dict) -> str:
    return r.get("label") or r["loss"]


def _stats(records: List[Dict], labels: List[str]) -> Dict[str, Dict[str, Tuple[float, float]]]:
    out = {}
    for lab in labels:
        mine = [r for r in records if _label(r) == lab]
        out[lab] = {}
        for key, _ in COLUMNS:
            m, s = mean_std(r.get(key) for r in mine)
            out[lab][key] = (m * 100, s * 100)
    return out


def _cell(m: float, s: float, n_seeds: int) -> str:
    if math.isnan(m):
        return "n/a"
    return f"{m:.1f}" if n_seeds == 1 else f"{m:.1f} ± {s:.1f}"


def suggest_thresholds(counts: List[int]) -> Tuple[int, int]:
    """(many, few) thresholds putting about the top and bottom 30% of classes in each group."""
    c = sorted(int(v) for v in counts)
    k = max(1, math.ceil(0.3 * len(c)))
    few = c[k - 1] + 1  # the k smallest classes have count < few
    many = c[-k] - 1  # the k largest classes have count > many
    if many < few:
        many = few
    return many, few


def _shot_notes(stats, labels, first) -> List[str]:
    counts = first["class_counts"]
    many_t, few_t = first["many_threshold"], first["few_threshold"]
    notes = []
    sug_many, sug_few = suggest_thresholds(counts)
    for key, rule in (("many", f"more than {many_t}"), ("medium", f"{few_t} to {many_t}"),
                      ("few", f"fewer than {few_t}")):
        if all(math.isnan(stats[lab][key][0]) for lab in labels):
            notes.append(f"The {key}-shot group is empty: no class has {rule} training samples (training "
                         f"counts run from {max(counts)} down to {min(counts)}). Pass "
                         f"`--many-threshold {sug_many} --few-threshold {sug_few}` to put about a third of the "
                         "classes in each group.")
    return notes


def _test_note(first) -> Tuple[str, bool]:
    test = [c for c in first.get("test_counts", []) if c > 0]
    if not test:
        return "", False
    ratio = max(test) / min(test)
    if ratio > 1.5:
        return (f"The test split is imbalanced (its largest class has {max(test)} samples, its smallest "
                f"{min(test)}: ratio {ratio:.1f}): `overall` follows that mix, `balanced` weighs every class "
                "equally, and a gain in one can be a loss in the other."), True
    return ("The test split is balanced, so `overall` is close to `balanced`; `natural` re-weights the "
            "per-class accuracy by the training class frequencies: the accuracy to expect on data distributed "
            "like the training set."), False


def _delta_phrase(stats, a: str, b: str) -> str:
    parts = []
    for key, name in (("balanced_acc", "balanced"), ("few", "few-shot"), ("medium", "medium-shot"),
                      ("many", "many-shot"), ("overall", "overall"), ("natural_acc", "natural-distribution")):
        d = stats[a][key][0] - stats[b][key][0]
        if not math.isnan(d):
            parts.append(f"{name} {d:+.1f}")
    return ", ".join(parts)


def recommend(stats: Dict[str, Dict[str, Tuple[float, float]]], labels: List[str], n_seeds: int,
              test_imbalanced: bool, names: Optional[Dict[str, str]] = None) -> str:
    """The advice paragraph (markdown) for the grid ``labels`` with per-metric (mean, std) in %;
    ``names`` maps a label to the row name shown (e.g. ``balanced_softmax = logit_adjusted``)."""
    names = names or {}

    def q(lab: str) -> str:
        return f"`{names.get(lab, lab)}`"

    bal = {lab: stats[lab]["balanced_acc"][0] for lab in labels}
    sd = {lab: stats[lab]["balanced_acc"][1] for lab in labels}
    has_base = BASELINE in labels
    if len(labels) == 1:
        if has_base:
            return ("**Recommendation:** none: only plain cross-entropy was run, so there is nothing to compare "
                    "it with. Add configurations, e.g. `--losses cross_entropy,balanced_softmax,"
                    "logit_adjusted:tau=2 --samplers none,class_balanced --post-hoc adjust`.")
        return (f"**Recommendation:** none: only {q(labels[0])} was run ({bal[labels[0]]:.1f}% balanced accuracy); "
                "add `cross_entropy` to `--losses` to see what it changes.")
    winner = max(labels, key=lambda lab: bal[lab])
    spread = lambda a, b: max(sd[a], sd[b])  # noqa: E731
    tied = [lab for lab in labels if lab != winner and n_seeds > 1 and bal[winner] - bal[lab] <= spread(winner, lab)]
    tie_text = (f" Within the seed spread of it: {', '.join(f'{q(t)}' for t in tied)}; prefer the simplest."
                if tied else "")
    if not has_base:
        return (f"**Recommendation:** {q(winner)} has the best balanced accuracy ({bal[winner]:.1f}%), but no plain "
                f"cross-entropy run was there to compare it with; add `cross_entropy` to `--losses`.{tie_text}")
    base = BASELINE
    others = [lab for lab in labels if lab != base]
    best_other = max(others, key=lambda lab: bal[lab])
    gap = bal[best_other] - bal[base]
    if gap <= 0:
        return (f"**Recommendation:** keep plain cross-entropy: nothing in the grid beat it on balanced accuracy "
                f"({bal[base]:.1f}%; the best other, {q(best_other)}, reaches {bal[best_other]:.1f}%, "
                f"{gap:+.1f} points). The imbalance may be mild for this model, or the runs too short.")
    delta = _delta_phrase(stats, best_other, base)
    if n_seeds == 1:
        return (f"**Recommendation:** none yet: with one seed there is no spread to judge a gap by. {q(best_other)} "
                f"leads plain cross-entropy by {gap:+.1f} balanced-accuracy points (change vs cross-entropy: "
                f"{delta}); run `--seeds 3` or more before switching.")
    s = spread(best_other, base)
    if gap <= s:
        return (f"**Recommendation:** none: the best configuration, {q(best_other)}, leads plain cross-entropy by "
                f"{gap:+.1f} balanced-accuracy points, not more than the seed spread (± {s:.1f}), so the "
                f"difference is not evidence. Keep cross-entropy, or add seeds (`--seeds 5`) to settle it "
                f"(change vs cross-entropy: {delta}).")
    text = (f"**Recommendation:** {q(best_other)}: {bal[best_other]:.1f}% balanced accuracy, {gap:+.1f} points over "
            f"plain cross-entropy (seed spread ± {s:.1f}). Change vs cross-entropy: {delta} (points).{tie_text}")
    d_overall = stats[best_other]["overall"][0] - stats[base]["overall"][0]
    d_natural = stats[best_other]["natural_acc"][0] - stats[base]["natural_acc"][0]
    if test_imbalanced and d_overall < 0:
        text += (f" On this imbalanced test split overall accuracy falls by {-d_overall:.1f} points: it trades "
                 "head-class accuracy for the tail; switch only if every class matters equally to you.")
    elif not math.isnan(d_natural) and d_natural < 0:
        text += (f" On data distributed like the training set (natural accuracy) it loses {-d_natural:.1f} "
                 "points: the tail gains are paid by the head classes; switch only if every class matters "
                 "equally to you.")
    return text


def classification_report(records: List[Dict], args, out_dir: Path) -> str:
    if not records:
        return "## Classification\n\nNo finished runs."
    labels = list(dict.fromkeys(_label(r) for r in records))
    aliases = getattr(args, "classification_aliases", None) or {}
    stats = _stats(records, labels)
    first = records[0]
    n_seeds = len({r["seed"] for r in records})
    if first["dataset"] in ("cifar10-lt", "cifar100-lt", "fashion-mnist-lt"):
        setup = "the dataset's own balanced test split; small ResNet"
    elif first["dataset"] == "digits":
        setup = f"balanced test split of {first['test_per_class']} images per class; 64-unit MLP"
    else:
        setup = "stratified 25% test split (your data's own class balance); 64-unit MLP"
    if first["imbalance_factor"] is not None and first["imbalance_factor"] > 1:
        train = (f"training set long-tailed (profile {first['profile']}, imbalance factor "
                 f"{first['imbalance_factor']:g})")
    else:
        train = "training set with its natural class balance"
    device = first.get("device_name") or first.get("device", "cpu")
    precision = f", {first['mixed_precision']}" if first.get("mixed_precision") else ""
    secs = float(np.mean([r.get("seconds", 0.0) for r in records]))
    spread_text = ("mean ± std over seeds" if n_seeds > 1 else
                   "one seed, so no spread is shown: add `--seeds 3` or more before trusting a gap")
    lines = ["## Classification", "",
             f"Data: {first['dataset']}, {train}, per-class training counts {first['class_counts']}; {setup} "
             f"trained {first['epochs']} epochs on {device}{precision} ({secs:.1f} s per run); {n_seeds} seed(s). "
             f"Accuracy in % ({spread_text}; best mean per column in bold, ties included). Many: > "
             f"{first['many_threshold']} training samples, few: < {first['few_threshold']}. `natural`: per-class "
             "accuracy weighted by the training class frequencies.", ""]
    best = {}
    for key, _ in COLUMNS:
        vals = [round(stats[lab][key][0], 1) for lab in labels if not math.isnan(stats[lab][key][0])]
        best[key] = max(vals) if vals else None
    lines += ["| configuration | " + " | ".join(name for _, name in COLUMNS) + " |",
              "|---|" + "---|" * len(COLUMNS)]
    for lab in labels:
        cells = []
        for key, _ in COLUMNS:
            m, s = stats[lab][key]
            c = _cell(m, s, n_seeds)
            cells.append(f"**{c}**" if best[key] is not None and not math.isnan(m) and round(m, 1) == best[key] else c)
        name = " = ".join([lab] + aliases.get(lab, []))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    notes = []
    for lab, same in aliases.items():
        if same and lab in labels:
            notes.append(f"`{lab}` and {', '.join(f'`{a}`' for a in same)} are the same objective with these "
                         "arguments (equal values and gradients on every probe batch): trained once, shown as one row.")
    taus = [r["tau"] for r in records if r.get("post_hoc") == "adjust" and r.get("tau") is not None]
    if taus:
        held = [r.get("holdout_size", 0) for r in records if r.get("post_hoc") == "adjust"]
        notes.append(f"Post-hoc adjustment: a cross-entropy model trained on 80% of the training set; tau tuned per "
                     f"seed on the held-out {held[0]} samples by balanced accuracy: "
                     f"{', '.join(f'{t:g}' for t in taus)}.")
    test_text, test_imbalanced = _test_note(first)
    notes += [test_text] + _shot_notes(stats, labels, first)
    for note in notes:
        if note:
            lines += ["", note]
    names = {lab: " = ".join([lab] + aliases.get(lab, [])) for lab in labels}
    lines += ["", recommend(stats, labels, n_seeds, test_imbalanced, names), ""]
    png = _plot(records, labels, aliases, out_dir)
    if png:
        lines.append(f"![per-class accuracy vs training count]({png})")
    return "\n".join(lines)


def _plot(records, labels, aliases, out_dir: Path):
    plt = pyplot()
    if plt is None:
        return None
    counts = np.asarray(records[0]["class_counts"])
    order = np.argsort(-counts)
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    markers = "osD^v<>ph*X"
    styles = ("-", "--", "-.", ":")
    for i, lab in enumerate(labels):
        acc = np.nanmean(np.asarray([[np.nan if v is None else v for v in r["per_class_acc"]]
                                     for r in records if _label(r) == lab], dtype=float), axis=0)
        name = " = ".join([lab] + aliases.get(lab, []))
        ax.plot(counts[order], acc[order] * 100, marker=markers[i % len(markers)],
                linestyle=styles[(i // len(markers)) % len(styles)], label=name, alpha=0.85)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("class training count (log scale, head -> tail)")
    ax.set_ylabel("test accuracy of the class (%)")
    ax.set_title("Per-class accuracy vs training count")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower left")
    return save_figure(fig, out_dir, "classification_per_class.png")
