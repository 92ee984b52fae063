"""Matplotlib figures for `wizardcoder report`, one experiment per colour.

Each function takes the report's experiments (``wizardcoder.experiments.report.Experiment``) and
returns PNG bytes, or None when no experiment has the data it draws.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from wizardcoder.rounds import METHODS, VERDICTS, round_number


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display; never opens a window
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 100, "font.size": 9, "axes.grid": True,
                         "grid.alpha": 0.3, "axes.spines.top": False,
                         "axes.spines.right": False})
    return plt


def _png(fig, rect: tuple[float, float, float, float] = (0, 0, 1, 1)) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout(rect=rect)
    fig.savefig(buf, format="png")
    _plt().close(fig)
    return buf.getvalue()


def _colors(n: int) -> list:
    cmap = _plt().get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def passk_bars(exps: Sequence) -> bytes | None:
    """pass@k per experiment with 95% bootstrap intervals over tasks."""
    rows = [(e, e.passk) for e in exps if e.passk]
    if not rows:
        return None
    plt = _plt()
    ks = sorted({k for _, p in rows for k in p})
    fig, ax = plt.subplots(figsize=(7, 3.4))
    width = 0.8 / len(rows)
    for i, ((exp, passk), color) in enumerate(zip(rows, _colors(len(rows)), strict=True)):
        xs = [j + i * width for j, k in enumerate(ks) if k in passk]
        vals = [passk[k]["value"] for k in ks if k in passk]
        lo = [passk[k]["value"] - passk[k]["low"] for k in ks if k in passk]
        hi = [passk[k]["high"] - passk[k]["value"] for k in ks if k in passk]
        ax.bar(xs, vals, width, yerr=[lo, hi], capsize=3, color=color, label=exp.name)
    ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(ks))],
                  [f"pass@{k}" for k in ks])
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction of tasks")
    ax.set_title("pass@k (95% bootstrap CI over tasks)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    return _png(fig)


def passk_vs_rounds(exps: Sequence, k: int = 1) -> bytes | None:
    """pass@k against the number of evolution rounds, one point per experiment."""
    points = [(e, e.passk[k]) for e in exps if k in e.passk]
    if not points:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for (exp, p), color in zip(points, _colors(len(points)), strict=True):
        ax.errorbar([exp.n_rounds], [p["value"]],
                    yerr=[[p["value"] - p["low"]], [p["high"] - p["value"]]],
                    fmt="o", capsize=4, color=color, label=exp.name)
    ax.set_xlabel("evolution rounds")
    ax.set_ylabel(f"pass@{k}")
    ax.set_ylim(0, 1)
    rounds = sorted({e.n_rounds for e, _ in points})
    ax.set_xticks(range(0, max(rounds) + 2))
    ax.set_title(f"pass@{k} vs rounds (95% CI)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    return _png(fig)


def per_round(exps: Sequence) -> bytes | None:
    """Training rows, lengths, difficulty proxy and diversity per round (0 = seed)."""
    have = [e for e in exps if e.rounds]
    if not have:
        return None
    panels = [("rows", "training rows"), ("instruction_words", "words / instruction"),
              ("response_words", "words / response"),
              ("constraint_terms", "constraint terms / instruction"),
              ("diversity_mean_cosine", "mean pairwise cosine\n(lower = more diverse)"),
              ("benchmark_similarity", "similarity to benchmark")]
    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(10, 5.2))
    for ax, (field, label) in zip(axes.flat, panels, strict=True):
        for exp, color in zip(have, _colors(len(have)), strict=True):
            pts = [(r["round"], r[field]) for r in exp.rounds if field in r]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", color=color, label=exp.name)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("round")
        ax.xaxis.get_major_locator().set_params(integer=True)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(len(labels), 6))
    return _png(fig, rect=(0, 0.07, 1, 1))


def elimination(exps: Sequence) -> bytes | None:
    """Per experiment: evolutions kept and dropped (by rule) in each round, stacked."""
    have = [e for e in exps if e.evolve]
    if not have:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(have), figsize=(3.6 * len(have) + 1.4, 3.4),
                             squeeze=False, sharey=True)
    colors = ["#54a24b", *_plt().get_cmap("Reds")([0.3 + 0.12 * i for i in range(len(VERDICTS))])]
    for ax, exp in zip(axes[0], have, strict=True):
        keys = sorted(exp.evolve, key=round_number)
        bottom = [0.0] * len(keys)
        series = [("kept", [exp.evolve[r].get("kept", 0) for r in keys])]
        series += [(f"dropped: {rule}", [exp.evolve[r].get("dropped_by_rule", {}).get(rule, 0)
                                         for r in keys]) for rule in VERDICTS]
        for (label, vals), color in zip(series, colors, strict=True):
            ax.bar(keys, vals, bottom=bottom, color=color, label=label)
            bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
        ax.set_title(exp.name, fontsize=9)
        ax.set_xlabel("round")
    axes[0][0].set_ylabel("evolutions")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    fig.suptitle("elimination per round: kept vs dropped by rule", fontsize=10)
    return _png(fig)


def methods(exps: Sequence) -> bytes | None:
    """Keep rate of each evolution method, summed over rounds, per experiment."""
    have = [e for e in exps if e.evolve]
    if not have:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    width = 0.8 / len(have)
    for i, (exp, color) in enumerate(zip(have, _colors(len(have)), strict=True)):
        kept, total = [], []
        for m in METHODS:
            stats = [exp.evolve[r].get("by_method", {}).get(m, {}) for r in exp.evolve]
            kept.append(sum(s.get("kept", 0) for s in stats))
            total.append(sum(s.get("kept", 0) + s.get("dropped", 0) for s in stats))
        xs = [j + i * width for j in range(len(METHODS))]
        ax.bar(xs, total, width, color=color, alpha=0.3)
        ax.bar(xs, kept, width, color=color, label=f"{exp.name} (kept; pale: tried)")
    ax.set_xticks([j + width * (len(have) - 1) / 2 for j in range(len(METHODS))],
                  [m.replace("_", "\n") for m in METHODS])
    ax.set_ylabel("evolutions")
    ax.set_title("evolutions tried and kept per method (all rounds)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    return _png(fig)


def train_loss(exps: Sequence) -> bytes | None:
    """Training loss per step, one line per experiment."""
    have = [e for e in exps if e.train_curve]
    if not have:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for exp, color in zip(have, _colors(len(have)), strict=True):
        pts = [(r["step"], r["loss"]) for r in exp.train_curve if r.get("loss") is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker=".", color=color, label=exp.name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("training loss")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    return _png(fig)


def verified_vs_unverified(exps: Sequence, k: int = 1) -> bytes | None:
    """pass@k against rounds, verified (evolve.verify: tests) and unverified experiments as
    two series; drawn only when the report holds at least one verified experiment."""
    points = [(e, e.passk[k]) for e in exps if k in e.passk]
    if not any(e.verified for e, _ in points):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for verified, color, shift in ((False, "#4c78a8", -0.06), (True, "#f58518", 0.06)):
        series = sorted(((e.n_rounds, p) for e, p in points if e.verified == verified),
                        key=lambda item: item[0])
        if not series:
            continue
        xs = [n + shift for n, _ in series]
        ax.errorbar(xs, [p["value"] for _, p in series],
                    yerr=[[p["value"] - p["low"] for _, p in series],
                          [p["high"] - p["value"] for _, p in series]],
                    fmt="o-", capsize=4, color=color,
                    label="verified (own tests pass)" if verified else "unverified")
    ax.set_xlabel("evolution rounds")
    ax.set_ylabel(f"pass@{k}")
    ax.set_ylim(0, 1)
    ax.set_title(f"pass@{k}: verified vs unverified evolution (95% CI)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    return _png(fig)


ALL = (("passk", "pass@k per experiment with 95% confidence intervals", passk_bars),
       ("passk_rounds", "pass@1 against the number of evolution rounds", passk_vs_rounds),
       ("verified", "pass@1 of verified vs unverified evolution", verified_vs_unverified),
       ("rounds", "data statistics per round", per_round),
       ("elimination", "elimination per round and rule", elimination),
       ("methods", "evolution methods: tried and kept", methods),
       ("train_loss", "training loss curves", train_loss))
