"""Statistics over the seeds of one configuration: is a difference between two configurations real?

    summarize(values)      n, mean, sample standard deviation, 95% confidence interval of the mean
                           (Student's t with n - 1 degrees of freedom)
    welch_p_value(a, b)    two-sided p-value of Welch's t-test (unequal variances): the chance of a
                           difference of means at least this large if both groups had the same mean
    group_name(overrides)  what names a group of runs that differ only in their seed (the seed left out)

No SciPy: Student's t distribution is computed from the regularized incomplete beta function,
    P(|T| > t) = I_x(df / 2, 1 / 2),  x = df / (df + t^2),
evaluated with its continued fraction (Numerical Recipes, 2nd ed., 6.4), and its quantile by
bisection on that CDF. tests/test_seed_stats.py checks both against printed t tables.
Imports neither torch nor NumPy: rnnexp-compare stays fast.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rnnexp.sweep_naming import parse_overrides

CONFIDENCE = 0.95
# the keys a seed group leaves out: `seed`, and what follows it by default (conf/data/*.yaml
# sets shuffle_seed: ${seed}, so a run's logged hparams show both varying together)
SEED_KEYS = ("seed", "data.shuffle_seed")
DEFAULTS_GROUP = "defaults"


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b), by the modified Lentz method."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                          -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta I_{x}({a}, {b}): continued fraction did not converge")


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if not (a > 0 and b > 0 and 0.0 <= x <= 1.0):
        raise ValueError(f"incomplete_beta needs a, b > 0 and 0 <= x <= 1, got a={a}, b={b}, x={x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    # the fraction converges fast for x < (a + 1) / (a + b + 2); beyond, use I_x(a, b) = 1 - I_{1-x}(b, a)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with df (> 0, not necessarily integer) degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(t):
        return 0.0
    return incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def t_cdf(t: float, df: float) -> float:
    """P(T <= t)."""
    tail = t_two_sided_p(t, df) / 2.0
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (e.g. p = 0.975, df = 4 -> 2.776), by bisection on t_cdf."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:  # the bracket doubles; df = 1, p = 0.9995 needs ~637
        low, high = high, 2.0 * high
    for _ in range(200):
        mid = 0.5 * (low + high)
        if t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low <= 1e-13 * max(1.0, high):
            break
    return 0.5 * (low + high)


@dataclass(frozen=True)
class Summary:
    """n values: mean, sample standard deviation (n - 1) and the CONFIDENCE interval of the mean.
    std and the interval are None for n = 1 (one run says nothing about the spread); the mean is
    None for n = 0."""

    n: int
    mean: float | None
    std: float | None
    ci95_low: float | None
    ci95_high: float | None


def finite(values: Iterable) -> list[float]:
    """The finite numbers among values (None, NaN and inf left out)."""
    kept = []
    for value in values:
        if value is None:
            continue
        value = float(value)
        if math.isfinite(value):
            kept.append(value)
    return kept


def summarize(values: Iterable[float], confidence: float = CONFIDENCE) -> Summary:
    """mean +- t_{(1 + confidence) / 2, n - 1} * std / sqrt(n), over the values (finite only)."""
    values = finite(values)
    n = len(values)
    if n == 0:
        return Summary(0, None, None, None, None)
    mean = math.fsum(values) / n
    if n == 1:
        return Summary(1, mean, None, None, None)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


def welch_p_value(a: Iterable[float], b: Iterable[float]) -> float | None:
    """Two-sided p-value of Welch's t-test of mean(a) = mean(b).

    t = (mean_a - mean_b) / sqrt(s_a^2 / n_a + s_b^2 / n_b), with the Welch-Satterthwaite degrees of
    freedom. None where the test is undefined: fewer than 2 values in a group, or no spread in
    either (both standard deviations 0: the t statistic is 0/0 or x/0)."""
    a, b = summarize(a), summarize(b)
    if a.n < 2 or b.n < 2:
        return None
    va, vb = a.std ** 2 / a.n, b.std ** 2 / b.n
    if va + vb == 0.0:
        return None
    t = (a.mean - b.mean) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / ((va ** 2 / (a.n - 1) if va else 0.0) + (vb ** 2 / (b.n - 1) if vb else 0.0))
    return t_two_sided_p(t, df)


def group_name(overrides: Mapping[str, object] | Iterable[str], over: Iterable[str] = SEED_KEYS) -> str:
    """The name of a run's seed group: its overrides, sorted, without the `over` keys and the
    output paths, as `key=value,key=value` (`defaults` when nothing is left).

    Runs that differ only in their seed get the same name: `cell=lstm seed=3 debug=fast` ->
    "cell=lstm,debug=fast". Takes Hydra's override strings or a {key: value} mapping. A swept
    boolean is spelled lower case (Hydra hands back `True` for `true`)."""
    if isinstance(overrides, Mapping):
        given = parse_overrides(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in overrides.items())
    else:
        given = parse_overrides(overrides)
    over = set(over)
    kept = {key: value for key, value in given.items() if key not in over}
    return ",".join(f"{k}={kept[k]}" for k in sorted(kept)) or DEFAULTS_GROUP
