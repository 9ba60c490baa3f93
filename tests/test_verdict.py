"""The run verdict on constructed per-generation trajectories (realistic numbers from small closed-loop runs).

Run: `/tmp/probe-venv/bin/python -m pytest tests/test_verdict.py -q`
"""
import math

import numpy as np
import pytest

from training import verdict as V


def recs(**series):
    """Records {generation, key: value} from equal-length lists, one list per metric key ('__' for '/')."""
    n = len(next(iter(series.values())))
    return [{"generation": g, **{k.replace("__", "/"): v[g] for k, v in series.items()}} for g in range(n)]


# A T = 1.0 run (pure replace): entropy flat, bpc rising 8.6% over 4 generations.
T1_ENTROPY = [2.871, 2.929, 2.938, 2.941, 2.951]
T1_BPC = [2.885, 2.956, 3.024, 3.097, 3.133]


def test_trend_slope_and_standard_error_by_hand():
    g = np.arange(5.0)
    t = V.trend(g, np.array(T1_BPC))
    # Σ(g-ḡ)(y-ȳ) = 0.637, Σ(g-ḡ)² = 10 -> b = 0.0637; residual se 0.0039 < floor 1% · 2.885
    assert t["slope"] == pytest.approx(0.0637, abs=1e-9)
    assert t["se"] == pytest.approx(0.00389, abs=5e-5)
    assert t["noise"] == pytest.approx(0.02885)
    assert t["dir"] == 1 and t["change"] == pytest.approx(0.248)
    assert V.trend(g, np.array(T1_ENTROPY))["dir"] == 0  # b = 0.0172 < 2 · 0.0287
    assert V.trend(g[:2], np.array(T1_BPC[:2]))["slope"] is None  # 2 points: no standard error
    # a big slope whose first-to-last change is small or reversed (rise then crash) is not a trend
    assert V.trend(g, np.array([1.0, 3.0, 5.0, 7.0, 0.9]))["dir"] == 0


def test_clean_collapse():
    r = recs(val__entropy=[2.87, 2.02, 1.13, 0.53, 0.81], val__bpc=[2.89, 3.31, 4.12, 5.20, 5.02],
             samples__word_entropy=[9.12, 8.20, 6.47, 4.93, 4.10], samples__distinct_2=[0.71, 0.62, 0.45, 0.30, 0.27],
             samples__novel_word_rate=[0.20, 0.12, 0.05, 0.02, 0.02])
    out = V.verdict(r)
    assert out["verdict"] == "collapse"
    assert out["slopes"]["val/entropy"] == pytest.approx(-0.561)
    assert set(out) >= {"verdict", "slopes", "noise", "rule", "reason"} and "collapse" in out["rule"]
    assert out["noise"]["val/entropy"] > 0.0287  # residual noise above the floor: the series bounces back


def test_clean_heat_death():
    ent = [2.87, 3.60, 4.19, 4.55, 4.61]
    r = recs(val__entropy=ent, val__bpc=[2.89, 3.70, 4.30, 4.66, 4.71],
             samples__word_entropy=[9.1, 10.2, 11.0, 11.6, 11.8],
             samples__novel_word_rate=[0.2, 0.45, 0.7, 0.85, 0.9])
    assert V.verdict(r)["verdict"] == "heat death"
    # without the novel-word rate, the uniform limit decides: log2(28 symbols) = 4.81 bits, gap 1.94 -> 0.20
    bare = recs(val__entropy=ent, val__bpc=[2.89, 3.70, 4.30, 4.66, 4.71])
    assert V.verdict(bare, uniform_bits=math.log2(28))["verdict"] == "heat death"
    # with neither confirmation it is not called heat death (bpc rises: drift)
    assert V.verdict(bare)["verdict"] == "drift"
    with pytest.raises(ValueError, match="uniform_bits"):
        V.verdict(bare, uniform_bits=-1.0)


def test_flat_noisy_series_is_stable():
    rng = np.random.default_rng(0)
    n = 8
    r = recs(val__entropy=list(2.9 + 0.03 * rng.standard_normal(n)), val__bpc=list(2.9 + 0.03 * rng.standard_normal(n)),
             samples__distinct_2=list(0.7 + 0.01 * rng.standard_normal(n)),
             samples__novel_word_rate=list(0.2 + 0.005 * rng.standard_normal(n)))
    out = V.verdict(r)
    assert out["verdict"] == "stable", out["reason"]
    # improving bpc (fresh data mixed in) still counts as stable
    r2 = recs(val__entropy=T1_ENTROPY, val__bpc=[3.20, 3.05, 2.95, 2.90, 2.88])
    assert V.verdict(r2)["verdict"] == "stable"


def test_real_t1_run_is_drift_not_stable():
    out = V.verdict(recs(val__entropy=T1_ENTROPY, val__bpc=T1_BPC))
    assert out["verdict"] == "drift"
    assert "val/bpc rises" in out["reason"]
    # the same entropies with a bpc inside noise are stable
    assert V.verdict(recs(val__entropy=T1_ENTROPY, val__bpc=[2.885, 2.90, 2.88, 2.91, 2.895]))["verdict"] == "stable"


def test_entropy_falling_but_diversity_rising_is_not_collapse():
    ent = [2.87, 2.50, 2.20, 1.90, 1.60]
    r = recs(val__entropy=ent, val__bpc=[2.89, 2.90, 2.88, 2.91, 2.90],
             samples__word_entropy=[9.1, 9.6, 10.1, 10.5, 11.0])
    out = V.verdict(r)
    assert out["verdict"] == "undetermined" and "does not" in out["reason"]
    # ... and when bpc rises as well it is drift, still not collapse
    r2 = recs(val__entropy=ent, val__bpc=[2.89, 3.1, 3.3, 3.5, 3.7], samples__distinct_2=[0.6, 0.65, 0.7, 0.75, 0.8])
    assert V.verdict(r2)["verdict"] == "drift"
    # without any diversity measure a falling entropy alone is not enough either
    assert V.verdict(recs(val__entropy=ent, val__bpc=[2.89, 2.90, 2.88, 2.91, 2.90]))["verdict"] == "undetermined"


def test_too_few_generations_is_undetermined():
    r = recs(val__entropy=[2.87, 2.02], val__bpc=[2.89, 3.31])
    assert V.verdict(r)["verdict"] == "undetermined"
    assert V.verdict([])["verdict"] == "undetermined"
    # three records but entropy and bpc known in only two of them
    r3 = recs(val__entropy=[2.87, None, 1.13], val__bpc=[2.89, None, 4.1])
    assert V.verdict(r3)["verdict"] == "undetermined"


def test_none_and_nan_values_are_skipped():
    r = recs(val__entropy=[2.87, None, 2.02, 1.13, 0.53, 0.81],
             samples__word_entropy=[9.12, 8.8, None, 6.47, float("nan"), 4.10],
             val__bpc=[None] * 6, samples__distinct_2=[None] * 6)
    out = V.verdict(r)
    assert out["verdict"] == "collapse"
    assert out["slopes"]["val/bpc"] is None and out["noise"]["samples/distinct_2"] is None


def test_verdict_so_far_is_the_verdict_of_a_prefix():
    r = recs(val__entropy=[2.87, 3.60, 4.19, 4.55, 4.61], samples__novel_word_rate=[0.2, 0.45, 0.7, 0.85, 0.9])
    assert V.verdict_so_far(r, generation=1)["verdict"] == "undetermined"
    assert V.verdict_so_far(r, generation=2) == V.verdict(r[:3])
    assert V.verdict_so_far(r) == V.verdict(r)
    assert V.verdict_so_far(r)["verdict"] == "heat death"
