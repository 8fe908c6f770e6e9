"""Drift of a new data drop against the data the champion was trained on, judged check by check
against DriftConfig's thresholds (tasks/config.py).

    report = compare(champion_profile, drop_profile, cfg.drift, overlap_share(train, dev), "2024-06")
    report.blocked                       # True: training must not start
    report.markdown("Drift of drop 2024-06"), report.to_json(), plot(before, after, png_path)

    label_shift   largest change of a class share, when chi-square says p < significance
                  (regression: change of the mean over the score range, when KS on the binned
                  scores says so)
    length_psi    population stability index of lengths over LENGTH_BINS (see length_bins)
    length_ks     two-sample KS statistic of lengths
    truncated     change in the share longer than max_seq_length
    unk_rate      change in the share of [UNK] wordpieces
    duplicates    the drop's share of rows repeating an earlier row
    eval_overlap  share of evaluation examples also in the drop's train
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict
from scipy import stats

from tasks.config import DriftCheck, DriftConfig
from tasks.profile import DataProfile, overlap_share

PSI_EPSILON = 1e-4  # the share given to an empty bin, so that its log stays finite
LENGTH_BINS = 16  # equal-width bins up to max_seq_length; then [m, 2m), [2m, 4m), [4m, ...)
Status = Literal["ok", "warn", "block"]

__all__ = ["DriftCheckResult", "DriftReport", "compare", "overlap_share", "plot"]


class DriftCheckResult(BaseModel):
    """One check: its statistic, the thresholds it was held to, the verdict, the numbers."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: float
    warn: float | None
    block: float | None
    status: Status
    detail: str


class DriftReport(BaseModel):
    """Every check of one drop, in DriftConfig's order."""

    model_config = ConfigDict(frozen=True)

    drop: str
    checks: list[DriftCheckResult]

    @property
    def blocked(self) -> bool:
        return any(check.status == "block" for check in self.checks)

    @property
    def breached(self) -> list[DriftCheckResult]:
        return [check for check in self.checks if check.status != "ok"]

    def markdown(self, title: str) -> str:
        """A verdict line, each breached check with its numbers, then a table of all checks."""
        breached = self.breached
        verdict = ("**Blocked**: training stops." if self.blocked else
                   "**Warnings**: training goes on." if breached else
                   "No drift past the thresholds.")
        lines = [f"## {title}", "", f"Drop `{self.drop or '-'}`: {verdict}", ""]
        lines += [f"- **{c.name}** {c.status} (value {c.value:.4g}, {_thresholds(c)}): "
                  f"{c.detail}" for c in breached] + [""] * bool(breached)
        lines += ["| check | value | warn | block | status | detail |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {c.name} | {c.value:.4g} | {_fmt(c.warn)} | {_fmt(c.block)} | {c.status} | "
                  f"{c.detail.replace('|', chr(92) + '|')} |" for c in self.checks]
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def _fmt(threshold: float | None) -> str:
    return "-" if threshold is None else f"{threshold:g}"


def _thresholds(check: DriftCheckResult) -> str:
    return f"warn at {_fmt(check.warn)}, block at {_fmt(check.block)}"


class Measured(NamedTuple):
    value: float
    detail: str
    significant: bool = True  # False: a test says the change may be chance; never flagged


def _pct(share: float, digits: int = 1) -> str:
    return f"{100 * share:.{digits}f}%"


def _pp(delta: float, digits: int = 1) -> str:
    return f"{100 * delta:+.{digits}f} pp"


def label_shift(before: DataProfile, after: DataProfile, significance: float) -> Measured:
    """The largest change of one class's share, with chi-square's p over the 2 x K counts."""
    if before.regression != after.regression:
        raise ValueError("one profile holds scores and the other class counts: not comparable")
    if before.regression:
        return _score_shift(before, after, significance)
    names = sorted(set(before.label_counts) | set(after.label_counts))
    table = np.array([[p.label_counts.get(n, 0) for n in names] for p in (before, after)])
    if len(names) < 2 or (table.sum(axis=1) == 0).any():
        return Measured(0.0, f"classes {names}: nothing to compare", False)
    shares = table / table.sum(axis=1, keepdims=True)
    deltas = shares[1] - shares[0]  # on a tie (two classes), name the class that rose
    worst = max(range(len(names)), key=lambda i: (round(abs(deltas[i]), 12), deltas[i]))
    delta = deltas[worst]
    p = stats.chi2_contingency(table).pvalue
    detail = (f"label {names[worst]} share {_pct(shares[0, worst])} -> {_pct(shares[1, worst])} "
              f"({_pp(delta)}), chi-square p={p:.2g}")
    return Measured(abs(delta), detail, p < significance)


def _expanded(values: np.ndarray, counts) -> np.ndarray:
    return np.repeat(values, np.asarray(counts, np.int64))


def _score_shift(before: DataProfile, after: DataProfile, significance: float) -> Measured:
    """Change of the mean score over the joint score range, KS on the bins' midpoints."""
    low = min(before.score_range[0], after.score_range[0])
    high = max(before.score_range[1], after.score_range[1])
    samples = [_expanded((e[:-1] + e[1:]) / 2, p.score_counts)
               for p in (before, after) for e in [p.score_edges()]]
    if min(map(len, samples)) == 0:
        return Measured(0.0, "no scores to compare", False)
    p = stats.ks_2samp(*samples).pvalue
    delta = after.score_mean - before.score_mean
    shift = abs(delta) / (high - low)
    detail = (f"mean score {before.score_mean:.3f} -> {after.score_mean:.3f} ({delta:+.3f}, "
              f"{_pct(shift)} of {low:g}-{high:g}), KS p={p:.2g}")
    return Measured(shift, detail, p < significance)


def common_cap(before: DataProfile, after: DataProfile) -> int:
    return min(before.length_cap, after.length_cap)


def folded(profile: DataProfile, cap: int) -> np.ndarray:
    """Length counts 0..cap, the last holding every length >= cap.

    >>> folded(DataProfile(rows=3, pair=False, text_b_share=0, max_seq_length=1,
    ...     length_counts=[0, 1, 1, 0, 1], truncated_share=1, unk_rate=0, duplicate_share=0), 2)
    array([0, 1, 2])
    """
    counts = np.asarray(profile.length_counts, np.int64)
    return np.append(counts[:cap], counts[cap:].sum())


def length_bins(max_seq_length: int, cap: int) -> np.ndarray:
    """Start of each PSI bin: LENGTH_BINS equal widths up to max_seq_length, then doubling.

    >>> length_bins(128, 512).tolist()
    [0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 104, 112, 120, 128, 256, 512]
    """
    starts = np.round(np.linspace(0, max_seq_length, LENGTH_BINS + 1)).astype(int)
    starts = np.append(starts, [2 * max_seq_length, 4 * max_seq_length])
    return np.unique(np.minimum(starts, cap))


def psi(expected: np.ndarray, actual: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index sum((a - e) ln(a / e)) over shares, empty bins at `epsilon`.

    >>> round(psi(np.array([50, 50]), np.array([50, 50])), 6), round(psi(np.array([90, 10]),
    ...                                                              np.array([50, 50])), 3)
    (0.0, 0.879)
    """
    e = np.maximum(expected / max(expected.sum(), 1), epsilon)
    a = np.maximum(actual / max(actual.sum(), 1), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def _mean_length(counts: np.ndarray) -> float:
    return float(np.arange(len(counts)) @ counts / max(counts.sum(), 1))


def length_psi(before: DataProfile, after: DataProfile) -> Measured:
    cap = common_cap(before, after)
    counts = [folded(p, cap) for p in (before, after)]
    starts = length_bins(before.max_seq_length, cap)
    value = psi(*(np.add.reduceat(c, starts) for c in counts))
    detail = (f"PSI {value:.3f} over {len(starts)} length bins, mean length "
              f"{_mean_length(counts[0]):.1f} -> {_mean_length(counts[1]):.1f} tokens")
    return Measured(value, detail)


def length_ks(before: DataProfile, after: DataProfile) -> Measured:
    cap = common_cap(before, after)
    samples = [_expanded(np.arange(cap + 1), folded(p, cap)) for p in (before, after)]
    if min(map(len, samples)) == 0:
        return Measured(0.0, "no examples to compare", False)
    result = stats.ks_2samp(*samples, method="asymp")
    detail = (f"KS D={result.statistic:.3f}, p={result.pvalue:.2g}, median length "
              f"{np.median(samples[0]):g} -> {np.median(samples[1]):g} tokens")
    return Measured(float(result.statistic), detail)


def _share_change(what: str, before: float, after: float, digits: int = 1) -> Measured:
    return Measured(abs(after - before), f"{what} {_pct(before, digits)} -> "
                                         f"{_pct(after, digits)} ({_pp(after - before, digits)})")


def measure(before: DataProfile, after: DataProfile, significance: float,
            eval_overlap: float) -> dict[str, Measured]:
    """Every check's statistic, by DriftConfig's names."""
    return {
        "label_shift": label_shift(before, after, significance),
        "length_psi": length_psi(before, after),
        "length_ks": length_ks(before, after),
        "truncated": _share_change(f"truncated (> {after.max_seq_length} tokens)",
                                   before.truncated_share, after.truncated_share),
        "unk_rate": _share_change("[UNK] wordpieces", before.unk_rate, after.unk_rate, 2),
        "duplicates": Measured(after.duplicate_share, (
            f"{_pct(after.duplicate_share)} of the drop's {after.rows} rows repeat an earlier "
            f"one (champion's data: {_pct(before.duplicate_share)})")),
        "eval_overlap": Measured(eval_overlap, f"{_pct(eval_overlap)} of evaluation examples "
                                               "are also in the drop's train"),
    }


def judge(value: float, check: DriftCheck, enabled: bool = True,
          significant: bool = True) -> Status:
    """At or over `block`: block; at or over `warn`: warn; disabled or not significant: ok.

    >>> c = DriftCheck(warn=0.1, block=0.25)
    >>> judge(0.05, c), judge(0.1, c), judge(0.3, c), judge(0.3, c, significant=False)
    ('ok', 'warn', 'block', 'ok')
    """
    if not (enabled and significant):
        return "ok"
    if check.block is not None and value >= check.block:
        return "block"
    if check.warn is not None and value >= check.warn:
        return "warn"
    return "ok"


def compare(before: DataProfile, after: DataProfile, cfg: DriftConfig, eval_overlap: float,
            drop: str = "") -> DriftReport:
    """The drop's profile (`after`) against the champion's training data (`before`)."""
    checks = []
    for name, m in measure(before, after, cfg.significance, eval_overlap).items():
        check: DriftCheck = getattr(cfg, name)
        detail = m.detail if m.significant else f"{m.detail} (not significant)"
        checks.append(DriftCheckResult(
            name=name, value=m.value, warn=check.warn, block=check.block,
            status=judge(m.value, check, cfg.enabled, m.significant), detail=detail))
    return DriftReport(drop=drop, checks=checks)


SIDES = ("champion's training data", "new drop")


def _length_panel(ax, before: DataProfile, after: DataProfile) -> None:
    cap = common_cap(before, after)
    width = max(1, before.max_seq_length // LENGTH_BINS)
    counts = [folded(p, cap) for p in (before, after)]
    top = max(int(np.flatnonzero(c).max(initial=0)) for c in counts) + 1
    edges = np.arange(0, top + width, width)
    for c, side in zip(counts, SIDES):
        binned, _ = np.histogram(np.arange(cap + 1), bins=edges, weights=c)
        ax.stairs(binned / max(c.sum(), 1), edges, label=side, lw=1.5)
    ax.axvline(before.max_seq_length, linestyle="--", color="grey", label="max_seq_length")
    ax.set(xlabel=f"tokens (last bin: {cap} or more)" if top > cap else "tokens",
           ylabel="share of examples", title="Untruncated lengths")


def _label_panel(ax, before: DataProfile, after: DataProfile) -> None:
    if before.regression and after.regression:
        for p, side in zip((before, after), SIDES):
            ax.stairs(np.asarray(p.score_counts) / max(sum(p.score_counts), 1), p.score_edges(),
                      label=side, lw=1.5)
        ax.set(xlabel="score", ylabel="share of examples", title="Scores")
    else:
        names = sorted(set(before.label_counts) | set(after.label_counts))
        x = np.arange(len(names))
        for offset, p, side in zip((-0.2, 0.2), (before, after), SIDES):
            total = max(sum(p.label_counts.values()), 1)
            ax.bar(x + offset, [p.label_counts.get(n, 0) / total for n in names], 0.4,
                   label=side)
        ax.set(xticks=x, xticklabels=names, xlabel="label", ylabel="share of examples",
               title="Labels")


def plot(before: DataProfile, after: DataProfile, path: Path) -> Path:
    """One PNG: length shares of both overlaid, label (or binned score) shares side by side."""
    fig = Figure(figsize=(9, 4), layout="constrained")
    lengths, labels = fig.subplots(1, 2)
    _length_panel(lengths, before, after)
    _label_panel(labels, before, after)
    fig.legend(*lengths.get_legend_handles_labels(), loc="outside lower center", ncols=3)
    fig.savefig(path, format="png", dpi=100)
    return path
