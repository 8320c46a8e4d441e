"""Student's t and Welch's test without SciPy, against printed tables and SciPy 1.17's values
(scipy.stats.t.ppf / t.cdf / ttest_ind(equal_var=False), computed once and written here)."""

from __future__ import annotations

import math

import pytest

from rnnexp import seed_stats


@pytest.mark.parametrize("df,expected", [(1, 12.706204736174694), (2, 4.302652729749462),
                                         (4, 2.7764451051977934), (9, 2.262157162798205),
                                         (30, 2.0422724563012378), (1000, 1.9623390808264083)])
def test_t_quantile_matches_the_t_table(df, expected):
    # the two-sided 95% column of a t table: 12.706, 4.303, 2.776, 2.262, 2.042, 1.962
    assert seed_stats.t_quantile(0.975, df) == pytest.approx(expected, rel=1e-10)
    assert seed_stats.t_quantile(0.025, df) == pytest.approx(-expected, rel=1e-10)


def test_t_quantile_far_tails_and_centre():
    assert seed_stats.t_quantile(0.995, 1) == pytest.approx(63.656741162871526, rel=1e-10)
    assert seed_stats.t_quantile(0.9995, 1) == pytest.approx(636.6192487687897, rel=1e-10)
    assert seed_stats.t_quantile(0.5, 3) == 0.0
    with pytest.raises(ValueError):
        seed_stats.t_quantile(1.0, 3)


def test_t_cdf_and_incomplete_beta_match_scipy():
    assert seed_stats.t_cdf(2.0, 3) == pytest.approx(0.9303370157205785, rel=1e-12)
    assert seed_stats.t_cdf(-1.5, 7.3) == pytest.approx(0.08778154640154305, rel=1e-12)  # non-integer df
    assert seed_stats.t_cdf(0.0, 5) == pytest.approx(0.5)
    assert seed_stats.incomplete_beta(2, 3, 0.4) == pytest.approx(0.5248, rel=1e-12)  # exact: 0.5248
    assert seed_stats.incomplete_beta(0.5, 0.5, 0.999) == pytest.approx(0.9798649583666235, rel=1e-12)
    assert seed_stats.incomplete_beta(2, 3, 0.0) == 0.0 and seed_stats.incomplete_beta(2, 3, 1.0) == 1.0


def test_summary_of_three_seeds():
    s = seed_stats.summarize([0.81, 0.83, 0.80])
    assert s.n == 3 and s.mean == pytest.approx(0.8133333333333334)
    assert s.std == pytest.approx(0.015275252316519466)
    # mean -+ t(0.975, 2) * std / sqrt(3) = 0.81333... -+ 4.302652729749462 * 0.015275... / sqrt(3)
    assert (s.ci95_low, s.ci95_high) == pytest.approx((0.7753875029973664, 0.8512791636693003), abs=1e-12)


def test_summary_boundaries_one_run_identical_runs_and_nan():
    one = seed_stats.summarize([0.7])
    assert (one.n, one.mean, one.std, one.ci95_low, one.ci95_high) == (1, 0.7, None, None, None)
    same = seed_stats.summarize([0.5, 0.5, 0.5, 0.5])
    assert (same.n, same.mean, same.std, same.ci95_low, same.ci95_high) == (4, 0.5, 0.0, 0.5, 0.5)
    # a diverged run's NaN, a missing value and an inf are not values: n counts the finite ones
    mixed = seed_stats.summarize([0.6, float("nan"), None, 0.8, float("inf")])
    assert mixed.n == 2 and mixed.mean == pytest.approx(0.7)
    assert seed_stats.summarize([]) == seed_stats.Summary(0, None, None, None, None)


@pytest.mark.parametrize("a,b,expected", [
    ([1, 2, 3, 4, 5], [2, 4, 6, 8, 10], 0.10753119493062728),            # equal n, unequal variances
    ([0.81, 0.83, 0.80], [0.78, 0.79, 0.775, 0.77, 0.80], 0.04977828399892247),  # unequal n
    ([0.5, 0.5, 0.5], [0.4, 0.45], 0.20483276469913353),                 # one group without spread
])
def test_welch_p_value_matches_scipy(a, b, expected):
    assert seed_stats.welch_p_value(a, b) == pytest.approx(expected, rel=1e-9)
    assert seed_stats.welch_p_value(b, a) == pytest.approx(expected, rel=1e-9)  # two-sided


def test_welch_is_undefined_without_two_values_or_any_spread():
    assert seed_stats.welch_p_value([0.9], [0.1, 0.2]) is None
    assert seed_stats.welch_p_value([0.9, 0.9], [0.1, 0.1]) is None
    assert seed_stats.welch_p_value([0.9, float("nan"), 0.8], [0.1, 0.2]) is not None  # NaN dropped: n = 2
    same = seed_stats.welch_p_value([0.2, 0.4, 0.6], [0.2, 0.4, 0.6])
    assert same == pytest.approx(1.0)
    assert not math.isnan(same)


def test_group_name_leaves_out_the_seed_and_where_runs_go():
    a = seed_stats.group_name(["cell=lstm", "seed=3", "debug=fast", "paths.output_root=/tmp/x",
                               "hydra.sweep.dir=/s", "model.bidirectional=True"])
    b = seed_stats.group_name(["model.bidirectional=true", "debug=fast", "seed=4", "cell=lstm"])
    assert a == b == "cell=lstm,debug=fast,model.bidirectional=true"
    assert seed_stats.group_name({"cell": "gru", "seed": 1, "data.shuffle_seed": 1}) == "cell=gru"
    assert seed_stats.group_name(["seed=1"]) == "defaults"
    assert seed_stats.group_name(["cell=lstm", "seed=1"], over=()) == "cell=lstm,seed=1"
