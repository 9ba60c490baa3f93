"""The run verdict (training/verdict.py): its agreement with the categorical theory's labelled trajectories, the
mislabels of the old slope rule, and its handling of missing values and prefixes.

Run: `python -m pytest tests/test_verdict.py -q` (about 15 s: generating the labelled drift class dominates).
"""
import math

import numpy as np
import pytest

from training import theory as th
from training import verdict as V

H5 = np.array([0.35, 0.25, 0.2, 0.12, 0.08])


def recs(**series):
    """Records {generation, key: value} from equal-length lists, one list per metric key ('__' for '/')."""
    n = len(next(iter(series.values())))
    return [{"generation": g, **{k.replace("__", "/"): v[g] for k, v in series.items()}} for g in range(n)]


def mean_field_records(h, t, lam, gens):
    """Exact mean-field trajectory as records: entropy (bits), top-1, cross-entropy of H (bits)."""
    m = th.mean_field_trajectory(h, h, t, lam, gens)
    return [{"generation": g, "val/entropy": float(th.entropy(m[g]) / math.log(2)), "val/top1": float(m[g].max()),
             "val/bpc": float(-(h * np.log2(m[g])).sum())} for g in range(gens)]


@pytest.fixture(scope="module")
def labelled():
    """The class-balanced smaller set (80 trajectories, seed 0; ~10 s, most of it generating the drift class)."""
    return V.labelled_trajectories(80, seed=0)


def test_agreement_with_the_theory(labelled):
    """The issue's targets on a smaller generated set: >= 95% overall and >= 90% in every class (400 trajectories,
    seeds 0-4: drift 95-96% except 89% at seed 2, overall 96.2-98%; `closedloop theory verdict-check --trajectories 400 --seed S`)."""
    a = V.agreement(labelled)
    assert a["n"] == 80 and a["overall"] >= 0.95, a
    for label in V.CLASSES:
        assert a["classes"][label]["rate"] >= 0.90, (label, a["classes"][label])


def test_drift_target(labelled):
    """Drift >= 90% now that the label keeps only neutral, visible, steady wanders (the verdict is not consulted):
    each drift setting is T = 1, λ = 0, replace, Zipf H with K >= 50, and its ensemble passes the three checks."""
    drift = [t for t in labelled if t["label"] == "drift"]
    assert V.agreement(drift)["classes"]["drift"]["rate"] >= 0.90
    for t in drift:
        s = t["setting"]
        assert (s["T"], s["lambda"], s["workflow"], s["H"]) == (1.0, 0.0, "replace", "zipf") and s["K"] in V.DRIFT_K
    h = np.arange(1, 51) ** -1.0
    h /= h.sum()  # K = 50, s = 1, N = 2K: tail loss (entropy falls ~2 bits, sd ~0.3) is not labelled drift
    e = V._drift_ensemble(h, 100, 18, np.random.default_rng(0))
    assert e["dH"] < -3 * e["dH_sd"] and not V._drift_clean(h, 100, 18, np.random.default_rng(0))


def test_labelled_trajectories_are_deterministic_and_balanced():
    a, b = V.labelled_trajectories(12, seed=3), V.labelled_trajectories(12, seed=3)
    assert [t["records"] for t in a] == [t["records"] for t in b]
    assert sorted(t["label"] for t in a) == sorted(list(V.CLASSES) * 3)


def test_shifted_mean_field_equilibrium_is_stable_not_collapse():
    """H5, T = 0.6, λ = 0.5: a stable equilibrium (ρ = 0.66); entropy falls 2.15 -> 1.83 bits and converges."""
    assert th.equilibrium(H5, 0.6, 0.5)["stable"]
    r = mean_field_records(H5, 0.6, 0.5, 8)
    assert r[0]["val/entropy"] == pytest.approx(2.153, abs=1e-3) and r[-1]["val/entropy"] == pytest.approx(1.833, abs=1e-3)
    out = V.verdict(r, uniform_bits=math.log2(5))
    assert out["verdict"] == "stable", out["reason"]
    assert -0.35 < out["shift"] < -0.2 and out["code"] == V.CODES["stable"]


def test_neural_fresh_data_run_is_stable_shifted():
    """A neural run, T = 0.7, λ = 0.7: val/entropy settles ~0.2 bits below generation 0."""
    out = V.verdict(recs(val__entropy=[2.87, 2.76, 2.63, 2.68, 2.64, 2.64]), uniform_bits=math.log2(33))
    assert out["verdict"] == "stable", out["reason"]
    assert out["shift"] == pytest.approx(-0.217, abs=0.01)


def test_one_time_step_is_not_a_trend():
    """A budget change at one generation moves entropy once; flat before and after is stable, shifted."""
    for series in ([2.87, 2.88, 2.86, 2.50, 2.51, 2.49, 2.50], [2.87, 2.50, 2.51, 2.49, 2.50, 2.50]):
        out = V.verdict(recs(val__entropy=series, val__top1=[0.41] + [0.45] * (len(series) - 1)), uniform_bits=5.0)
        assert out["verdict"] == "stable", out["reason"]
        assert out["shift"] == pytest.approx(-0.37, abs=0.02)


def test_lambda_zero_limits_and_neutral_drift():
    """Mean-field λ = 0: T < 1 collapses, T > 1 heats up (H5); a random walk away from H at T = 1 drifts."""
    assert V.verdict(mean_field_records(H5, 0.5, 0.0, 6), uniform_bits=math.log2(5))["verdict"] == "collapse"
    h = np.arange(1, 21) ** -1.0
    h /= h.sum()
    assert V.verdict(mean_field_records(h, 1.6, 0.0, 8), uniform_bits=math.log2(20))["verdict"] == "heat death"
    # a neural T = 1 run: entropy barely moves while val/bpc keeps rising (the model forgets the real data)
    out = V.verdict(recs(val__entropy=[2.871, 2.929, 2.938, 2.941, 2.951, 2.93, 2.95],
                         val__bpc=[2.885, 2.956, 3.024, 3.097, 3.133, 3.19, 3.25]))
    assert out["verdict"] == "drift", out["reason"]


def test_neural_shaped_failures():
    """Shapes of the debug preset at λ = 0: a collapse that breaks and bounces, and a decelerating heat death."""
    bounce = recs(val__entropy=[2.871, 1.813, 0.964, 0.752, 1.895, 0.532, 2.010, 1.214],
                  val__top1=[0.412, 0.657, 0.825, 0.876, 0.636, 0.875, 0.559, 0.665],
                  val__bpc=[2.91, 3.69, 5.87, 7.19, 7.26, 10.38, 7.94, 8.41])
    assert V.verdict(bounce, uniform_bits=math.log2(33))["verdict"] == "collapse"
    hot = recs(val__entropy=[2.871, 3.638, 4.189, 4.475, 4.584, 4.613, 4.653, 4.679],
               val__top1=[0.412, 0.276, 0.169, 0.111, 0.087, 0.086, 0.075, 0.066],
               val__bpc=[2.912, 3.101, 3.477, 3.882, 4.113, 4.319, 4.408, 4.491])
    assert V.verdict(hot, uniform_bits=math.log2(33))["verdict"] == "heat death"


def test_a_collapse_whose_model_degenerates_and_a_run_still_learning():
    """Two debug-preset runs (8 generations, seed 1 at T = 0.5, λ = 0; seed 0 at T = 0.7, λ = 0.7) as measured. The
    first reaches 0.95 bits (a third of generation 0's entropy) by generation 2, then its broken model spreads
    again while val/bpc keeps rising to 9: a collapse, not a drift. The second's entropy still falls 0.03
    bits/generation, but val/bpc falls with it (the model still learns the 70% fresh real data): stable, with its
    shift reported, not a drift away from the data."""
    broke = recs(val__entropy=[2.82, 1.81, 0.95, 0.96, 1.16, 1.65, 1.43, 1.94],
                 val__top1=[0.42, 0.65, 0.83, 0.82, 0.78, 0.70, 0.72, 0.61],
                 val__bpc=[2.88, 3.47, 5.53, 6.65, 7.51, 8.11, 9.14, 8.97])
    out = V.verdict(broke, uniform_bits=math.log2(27))
    assert out["verdict"] == "collapse" and "reached past half-way" in out["reason"]
    learning = recs(val__entropy=[2.87, 2.75, 2.66, 2.67, 2.66, 2.63, 2.63, 2.55],
                    val__top1=[0.41, 0.44, 0.45, 0.45, 0.44, 0.46, 0.45, 0.46],
                    val__bpc=[2.91, 2.87, 2.82, 2.81, 2.78, 2.73, 2.72, 2.72])
    out = V.verdict(learning, uniform_bits=math.log2(27))
    assert out["verdict"] == "stable" and "still falls" in out["reason"] and out["shift"] < -0.2
    # the same entropy with val/bpc rising instead is no longer learning: not stable
    leaving = recs(val__entropy=[r["val/entropy"] for r in learning],
                   val__top1=[r["val/top1"] for r in learning], val__bpc=[2.91, 2.95, 2.99, 3.04, 3.08, 3.13, 3.17, 3.21])
    assert V.verdict(leaving, uniform_bits=math.log2(27))["verdict"] != "stable"


def test_too_short_or_too_noisy_is_undetermined_with_the_reason():
    out = V.verdict(recs(val__entropy=[2.87, 2.02, 1.5]))
    assert out["verdict"] == "undetermined" and "too short" in out["reason"]
    assert V.verdict([])["verdict"] == "undetermined"
    assert V.verdict(recs(val__bpc=[2.9, 3.0, 3.1, 3.2, 3.3]))["verdict"] == "undetermined"  # no entropy at all
    noisy = recs(val__entropy=[2.9, 2.9, 2.2, 3.4, 2.3, 3.5, 2.4], val__bpc=[2.9, 3.0, 2.9, 3.1, 2.95, 3.0, 3.05])
    out = V.verdict(noisy)
    assert out["verdict"] == "undetermined" and "too noisy" in out["reason"]
    with pytest.raises(ValueError, match="uniform_bits"):
        V.verdict(noisy, uniform_bits=-1.0)


def test_none_and_nan_values_are_skipped():
    r = recs(val__entropy=[2.87, None, 2.02, 1.13, 0.53, 0.31, 0.2],
             val__top1=[0.4, 0.5, None, 0.8, float("nan"), 0.93, 0.95], val__bpc=[None] * 7,
             samples__distinct_2=[None] * 7)
    out = V.verdict(r)
    assert out["verdict"] == "collapse", out["reason"]
    assert out["slopes"]["val/bpc"] is None and out["noise"]["samples/distinct_2"] is None
    assert set(out) >= {"verdict", "code", "reason", "rule", "generations", "shift", "slopes"}


def test_verdict_so_far_is_the_verdict_of_a_prefix():
    r = recs(val__entropy=[2.87, 3.60, 4.19, 4.55, 4.61, 4.66], val__top1=[0.4, 0.3, 0.2, 0.12, 0.1, 0.09])
    assert V.verdict_so_far(r, generation=2)["verdict"] == "undetermined"
    assert V.verdict_so_far(r, generation=3) == V.verdict(r[:4])
    assert V.verdict_so_far(r) == V.verdict(r)
    assert V.verdict_so_far(r, uniform_bits=5.0)["verdict"] == "heat death"


def test_codes_cover_every_verdict():
    assert set(V.CODES) == {*V.CLASSES, "undetermined"} and len(set(V.CODES.values())) == 5
