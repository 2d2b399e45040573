"""What a slice can see: the minimum detectable effect (MDE) of each gate rule, and the
items a slice needs to resolve its tolerance — before or after a run.

The gate fails a rule "loss at most T" when its interval's lower bound exceeds T (harm
mode), and in safety mode passes it only when the upper bound is below T. With a
per-comparison two-sided level ``1 - a`` (Bonferroni over the variant's comparisons)
and ``z = z(1 - a/2) + z(power)``:

* **MDE** (harm mode): the true loss the gate fails with the given power: the drop
  ``L`` whose estimate clears the fail boundary ``b`` (where ``b - crit * se(b) = T``)
  that often, ``L = b + z(power) * se(L)``.
* **Items to resolve the tolerance**: the size at which the MDE is at most twice the
  tolerance (a loss of 2T fails with 80% power).
* **Items to show safety** (safety mode): the size at which a variant whose true loss is
  half the tolerance passes with 80% power.

Accuracy drops are modelled as flips on the items the baseline gets right, plus the
gains ``g`` (wrong -> right, per item) observed in a variant when one exists; the
standard error is the gate's own ratio-estimator one (see :func:`_drop_se`). Flip rates
are binomial, their MDE exact. Perplexity, KLD and top-1 take the variants' observed
spread (``--from`` a run), scaled to the tolerance (see :func:`_nearest`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pandas as pd
from scipy.stats import binom, norm
from scipy.stats import t as t_dist

from harness.metrics import get_metric

POWER = 0.8
RESOLVE = 2.0  # a slice resolves its tolerance when it fails a loss of RESOLVE x tolerance
SAFETY_DESIGN = 0.5  # safety mode is sized for a true loss of this share of the tolerance


def z_sum(level: float, power: float = POWER) -> float:
    """Two-sided critical value at ``level`` plus the one-sided quantile of ``power``."""
    return float(norm.ppf(1 - (1 - level) / 2) + norm.ppf(power))


def _drop_se(loss: float, n: int, accuracy: float, gained: float) -> float:
    """Standard error of the relative drop as the gate computes it: the ratio estimator
    ``sum(base - variant) / sum(base)`` over the ``n`` items plus its one lost and one
    gained pseudo-item, with ``lost = accuracy * loss + gained`` flips per item."""
    lost = min(max(accuracy * loss + gained, 0.0), accuracy)
    per_item = lost * (1 - loss) ** 2 + (accuracy - lost) * loss**2 + gained
    residuals = n * per_item + (1 - loss) ** 2 + 1  # the two pseudo-items
    return math.sqrt(residuals * (n + 2) / (n + 1)) / (n * accuracy + 1)


def _smallest_n(enough) -> int:
    """The smallest item count for which ``enough(n)`` holds (monotone), up to 10^8."""
    high = 2
    while not enough(high):
        high *= 2
        if high > 10**8:
            return 10**8
    low = high // 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high


def _solve(gap, low: float, high: float) -> float:
    """The root of an increasing ``gap`` on [low, high] by bisection (inf: none)."""
    if gap(high) < 0:
        return math.inf
    for _ in range(80):
        mid = (low + high) / 2
        low, high = (mid, high) if gap(mid) < 0 else (low, mid)
    return high


def _crit(level: float, n: int) -> float:
    """The gate's critical value: Student t with the ratio interval's degrees of freedom
    (the items plus two pseudo-items, less one)."""
    return float(t_dist.ppf(1 - (1 - level) / 2, n + 1))


def _fail_boundary(n: int, accuracy: float, tolerance: float, level: float, gained: float) -> float:
    """The observed drop above which the gate fails: ``l - crit * se(l) = tolerance``."""
    crit = _crit(level, n)
    return _solve(
        lambda loss: loss - tolerance - crit * _drop_se(loss, n, accuracy, gained), tolerance, 1.0
    )


def _pass_boundary(n: int, accuracy: float, tolerance: float, level: float, gained: float) -> float:
    """The observed drop below which safety mode passes: ``u + crit * se(u) = tolerance``."""
    crit = _crit(level, n)
    gap = lambda loss: loss + crit * _drop_se(loss, n, accuracy, gained) - tolerance  # noqa: E731
    return -math.inf if gap(0.0) > 0 else _solve(gap, 0.0, tolerance)


def drop_mde(n: int, accuracy: float, tolerance: float, level: float, gained: float = 0.0,
             power: float = POWER) -> float:  # fmt: skip
    """The relative accuracy drop the gate fails with ``power`` on ``n`` items: the true
    drop ``L`` with ``P(observed > fail boundary) = power``."""
    if n < 2 or accuracy <= 0:
        return math.inf
    edge, zb = _fail_boundary(n, accuracy, tolerance, level, gained), float(norm.ppf(power))
    if math.isinf(edge):
        return math.inf
    return _solve(lambda loss: loss - edge - zb * _drop_se(loss, n, accuracy, gained), edge, 1.0)


def flip_mde(n: int, tolerance: float, level: float, power: float = POWER) -> float:
    """The flip rate (right -> wrong, per item) the gate fails with ``power``, exactly:
    the gate fails when the Clopper-Pearson lower bound of ``lost / n`` exceeds the
    tolerance, i.e. from ``k`` lost items on, and ``P(Binomial(n, f) >= k) = power``."""
    if n < 2:
        return math.inf
    k = int(binom.isf((1 - level) / 2, n, tolerance)) + 1
    return _solve(lambda f: binom.sf(k - 1, n, f) - power, tolerance, 1.0)


def drop_items_needed(accuracy: float, tolerance: float, level: float, gained: float = 0.0,
                      power: float = POWER) -> int:  # fmt: skip
    """Items at which a drop of ``RESOLVE x tolerance`` fails with ``power``."""
    if accuracy <= 0:
        return 0
    return _smallest_n(
        lambda n: drop_mde(n, accuracy, tolerance, level, gained, power) <= RESOLVE * tolerance
    )


def flip_items_needed(tolerance: float, level: float, power: float = POWER) -> int:
    """Items at which a flip rate of ``RESOLVE x tolerance`` fails with ``power``."""
    za, zb, f = z_sum(level, 0.5), float(norm.ppf(power)), RESOLVE * tolerance
    spread = za * math.sqrt(tolerance * (1 - tolerance)) + zb * math.sqrt(f * (1 - f))
    return math.ceil((spread / (f - tolerance)) ** 2)


def safety_items_needed(accuracy: float, tolerance: float, level: float, gained: float = 0.0,
                        power: float = POWER) -> int:  # fmt: skip
    """Items at which a variant losing ``SAFETY_DESIGN x tolerance`` shows, with
    ``power``, that its loss is within the tolerance (safety mode passes it)."""
    if accuracy <= 0:
        return 0
    loss, zb = SAFETY_DESIGN * tolerance, float(norm.ppf(power))

    def enough(n: int) -> bool:
        return _pass_boundary(n, accuracy, tolerance, level, gained) - loss >= zb * _drop_se(
            loss, n, accuracy, gained
        )

    return _smallest_n(enough)


def se_mde(tolerance: float, se: float, level: float, direction: str = "max",
           power: float = POWER) -> float:  # fmt: skip
    """MDE of a rule whose estimate has standard error ``se`` (from an observed interval)."""
    shift = z_sum(level, power) * se
    return tolerance + shift if direction == "max" else tolerance - shift


def se_items_needed(tolerance: float, se: float, n: int, level: float, direction: str = "max",
                    power: float = POWER) -> int:  # fmt: skip
    """Items at which an ``se``-scaled rule fails a loss of ``RESOLVE x`` its tolerance:
    twice the tolerance for "at most" rules, twice the allowed shortfall ``1 - T`` below
    full agreement for "at least" rules."""
    allowed = tolerance if direction == "max" else 1 - tolerance
    if not math.isfinite(se) or allowed <= 0:
        return 0
    return math.ceil(n * (z_sum(level, power) * se / ((RESOLVE - 1) * allowed)) ** 2)


@dataclass(frozen=True)
class SlicePower:
    """What one task x slice can see for one rule."""

    task: str
    slice: str
    rule: str  # the rule's description, as in findings
    n: int
    tolerance: float
    mde: float  # in the rule's own units (relative drop, flip rate, nats, agreement)
    items_needed: int  # to resolve the tolerance (harm mode)
    items_for_safety: int | None  # to show safety at half the tolerance (accuracy rules)
    basis: str  # what the figure assumes

    @property
    def resolves(self) -> bool:
        return self.items_needed <= self.n


def slice_power(baseline: pd.DataFrame, metrics: dict[str, str], policy,
                comparisons: list | None = None) -> list[SlicePower]:  # fmt: skip
    """For every task x slice of the baseline's rows and every rule the gate applies
    there: the MDE and the items needed, at the level the gate uses (Bonferroni over the
    variant's comparisons). Accuracy and flip rules need only the baseline (assuming pure
    drops: no gains); perplexity, KLD and top-1 take the variants' spread in
    ``comparisons`` scaled to the tolerance (none: not known before a variant ran)."""
    from harness.analysis.gate import chosen_rules
    from harness.analysis.stats import add_fragile, explode_slices, family_size

    level = 1 - policy.alpha / max(family_size(baseline, 1), 1)
    spread = _observed_se(comparisons or [], level)
    out = []
    rows = explode_slices(add_fragile(baseline))
    for (task, slice_), group in rows.groupby(["task", "slice"], sort=False):
        metric = get_metric(metrics.get(task, "perplexity"))
        n = len(group)
        for rule in chosen_rules(policy, task, slice_, metric):
            tol = rule.tolerance
            if rule.kind == "max_flip_rate" and metric.outcome:
                mde, need, safe, basis = (
                    flip_mde(n, tol, level),
                    flip_items_needed(tol, level),
                    None,
                    "binomial, exact",
                )
            elif rule.kind == "max_drop" and metric.outcome:
                a = float(group[metric.column].astype(bool).mean())
                mde, need = drop_mde(n, a, tol, level), drop_items_needed(a, tol, level)
                safe, basis = (
                    safety_items_needed(a, tol, level),
                    f"baseline accuracy {a:.2f}, pure drops",
                )
            else:
                se = _nearest(spread.get((task, slice_, rule.field)), tol, rule.direction)
                if se is None:
                    mde, need, safe, basis = (
                        math.nan,
                        0,
                        None,
                        "needs a variant's spread (--from RUN)",
                    )
                else:
                    mde = se_mde(tol, se, level, rule.direction)
                    need = se_items_needed(tol, se, n, level, rule.direction)
                    safe, basis = None, "variants' spread, scaled to the tolerance"
            out.append(SlicePower(task, slice_, rule.describe(), n, tol, mde, need, safe, basis))
    return out


def _observed_se(
    comparisons: list, level: float
) -> dict[tuple[str, str, str], list[tuple[float, float]]]:
    """(task, slice, Comparison field) -> (value, standard error) of each variant, the
    error read back from its interval (half-width / critical value)."""
    z = float(norm.ppf(1 - (1 - level) / 2))
    spreads: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for c in comparisons:
        for field in ("loss", "kld", "top1"):
            ci, value = getattr(c, f"{field}_ci"), getattr(c, field)
            if ci is not None and value is not None and all(map(math.isfinite, (*ci, value))):
                spreads.setdefault((c.task, c.slice, field), []).append(
                    (value, (ci[1] - ci[0]) / (2 * z))
                )
    return spreads


def _nearest(
    spreads: list[tuple[float, float]] | None, tolerance: float, direction: str = "max"
) -> float | None:
    """The standard error expected of a variant sitting at the tolerance: the spread grows
    with the shift (KLD, a perplexity increase or top-1 disagreement are means of
    non-negative per-item amounts), so each variant's ratio of standard error to its shift
    is scaled to the tolerance's shift, and the median taken."""
    ratios = []
    for value, se in spreads or []:
        shift = value if direction == "max" else 1 - value
        if shift > 1e-9:
            ratios.append(se / shift)
    if not ratios:
        return None
    allowed = tolerance if direction == "max" else 1 - tolerance
    return allowed * float(pd.Series(ratios).median())


def power_frame(powers: list[SlicePower]) -> pd.DataFrame:
    frame = pd.DataFrame([dataclasses.asdict(p) for p in powers])
    if not frame.empty:
        frame["resolves"] = [p.resolves for p in powers]
    return frame
