"""The paper's categorical model (training/theory.py) and `closedloop theory` (training/theory_cli.py).

Checks the math against closed forms (τ_T, a_max = 1/T and λ* = 1 − T for uniform H, the collapsed branch's fold,
Wright–Fisher fixation time), the CLI's outputs and errors, and the `--from-run` overlay on a debug run.
Run: `python -m pytest tests/test_theory.py -q`.
"""
import csv
import json
import math
import os

import numpy as np
import pytest

from training import theory as th
from training.cli import main

H5 = [0.35, 0.25, 0.2, 0.12, 0.08]
U5 = np.full(5, 0.2)


def test_tau_properties():
    theta = np.array([0.5, 0.3, 0.0, 0.2])
    np.testing.assert_allclose(th.tau(theta, 1.0), theta, atol=1e-15)
    for t in (0.01, 0.5, 2.0, 50.0):
        p = th.tau(theta, t)
        assert p[2] == 0 and abs(p.sum() - 1) < 1e-12 and np.all(np.isfinite(p))
    np.testing.assert_allclose(th.tau(theta, 0.5), theta ** 2 / np.sum(theta ** 2))
    np.testing.assert_array_equal(th.tau(theta, 0.0), [1, 0, 0, 0])
    np.testing.assert_array_equal(th.tau([0.4, 0.4, 0.2], 0.0), [0.5, 0.5, 0])  # ties split (the T -> 0 limit)
    np.testing.assert_allclose(th.tau([1e-300, 1.0 - 1e-300], 0.001), [0, 1])  # log space: no 0/0 for small T


@pytest.mark.parametrize("t,sign", [(0.7, -1), (1.4, 1)])
def test_entropy_monotone_at_lambda_zero(t, sign):
    theta0 = np.random.default_rng(0).dirichlet(np.ones(8))
    traj = th.mean_field_trajectory(theta0, theta0, t, 0.0, 40)
    steps = np.diff(th.entropy(traj))
    assert np.all(sign * steps[:10] > 0) and np.all(sign * steps > -1e-12), steps  # T < 1 reaches the corner
    assert th.entropy_drift_sign(t) == sign
    np.testing.assert_allclose(traj[-1], th.end_state(theta0, t), atol=1e-3)


@pytest.mark.parametrize("h,t,lam", [(H5, 0.7, 0.3), (H5, 0.5, 0.05), (H5, 1.6, 0.2), (H5, 0.9, 0.0),
                                     (U5, 0.5, 0.2), ([0.6, 0.3, 0.1, 0.0], 0.3, 0.5), ([0.1] * 10, 1.3, 0.7)])
def test_equilibrium_satisfies_its_equation(h, t, lam):
    r = th.equilibrium(h, t, lam)
    theta = np.array(r["theta"])
    assert np.abs(theta - th.mean_field_step(theta, h, t, lam)).max() < 1e-9
    assert abs(theta.sum() - 1) < 1e-12 and np.all(theta[np.asarray(h) == 0] == 0)
    assert r["rho"] == pytest.approx((1 - lam) * r["a_max"]) and r["stable"] == (r["rho"] < 1)
    if r["stable"]:  # a stable equilibrium is where plain iteration from H goes
        rest, ok = th.iterate_to_rest(np.array([h], dtype=float), h, t, lam, max_iter=200_000)
        assert ok[0] and np.abs(rest[0] - theta).max() < 1e-8


def test_uniform_h_stability_closed_form():
    for t in (0.3, 0.7, 1.5):
        assert th.a_max(U5, t) == pytest.approx(1 / t)
        r = th.equilibrium(U5, t, 0.2)
        assert r["rho"] == pytest.approx(0.8 / t) and r["stable"] == (0.8 / t < 1)
    np.testing.assert_allclose(th.critical_fresh_fraction([0.5, 0.7, 0.9, 1.0, 1.5], U5), [0.5, 0.3, 0.1, 0, 0],
                               atol=1e-8)
    # For H with one largest entry, the branch from H slides smoothly to that corner and stays stable.
    assert th.critical_fresh_fraction([0.5], H5)[0] == 0.0


@pytest.mark.parametrize("t", [0.5, 0.7, 0.9])
def test_simulated_critical_fresh_fraction(t):
    """n = 5, uniform H, 0.01 grid. Started near H the map returns to H from the first grid λ above 1 − T, the
    same λ as the linear criterion ρ < 1. Started near a corner it stays collapsed up to the fold of the collapsed
    branch (5/9 at T = 0.5), above 1 − T: the model is bistable in between (hysteresis)."""
    grid = np.round(np.arange(0, 1.001, 0.01), 10)
    by_rho = grid[np.flatnonzero((1 - grid) / t < 1)[0]]
    near_h = th.simulated_critical_fresh_fraction(U5, t, start="h")
    assert abs(near_h - (1 - t)) <= 0.02 and abs(near_h - by_rho) <= 0.01 + 1e-9
    corner = th.simulated_critical_fresh_fraction(U5, t, start="corner")
    fold = th.collapse_fold_fresh_fraction([t], 5)[0]
    assert corner >= near_h and fold - 1e-9 <= corner <= fold + 0.01 + 1e-9
    if t == 0.5:
        assert fold == pytest.approx(5 / 9, abs=1e-6)


def test_fixation_time_matches_wright_fisher():
    h = np.full(10, 0.1)
    fix = th.simulate(h, 1.0, 0.0, 100, 100_000, 500, np.random.default_rng(0), until_fixation=True)["fixation"]
    assert np.all(fix > 0)
    wf = th.wright_fisher_fixation_time(h, 100)
    assert wf == pytest.approx(-2 * 100 * 10 * 0.9 * np.log(0.9))
    assert abs(fix.mean() / wf - 1) < 0.10, (fix.mean(), wf)


@pytest.mark.parametrize("workflow", ["replace", "accumulate", "accumulate-subsample"])
def test_simulate_workflows(workflow):
    run = lambda: th.simulate(H5, 0.7, 0.2, 200, 30, 64, np.random.default_rng(1), workflow=workflow,
                              fit_rate=0.8, noise=0.01)["theta"]
    a = run()
    assert a.shape == (30, 64, 5) and np.all(a >= 0) and np.allclose(a.sum(-1), 1)
    np.testing.assert_array_equal(a, run())  # same seed, same trajectory
    # Sampling at T < 1 sharpens on average: mean top-1 mass at the end exceeds H's.
    assert a[-1].max(-1).mean() > max(H5)


def test_context_predictions():
    rng = np.random.default_rng(0)
    logp = np.log(rng.dirichlet(np.ones(20), size=50))
    y = rng.integers(0, 20, size=50)
    same = th.context_predictions(logp, y, 1.0, 0.0, 4)
    np.testing.assert_allclose(same["entropy"], same["entropy"][0]) and np.testing.assert_allclose(same["excess_nll"], 0)
    cold = th.context_predictions(logp, y, 0.5, 0.0, 12)  # θ^(2^11): would underflow outside log space
    assert np.all(np.diff(cold["entropy"]) < 0) and np.all(np.isfinite(cold["excess_nll"]))
    assert cold["excess_nll"][0] == 0 and cold["excess_nll"][-1] > 0
    acc = th.context_predictions(logp, y, 0.5, 0.0, 12, workflow="accumulate")
    assert acc["entropy"][-1] > cold["entropy"][-1]  # the pool keeps generation 0's data: slower collapse


# --- CLI -----------------------------------------------------------------------------------------------------
def test_cli_equilibrium(capsys):
    args = ["theory", "equilibrium", "--h", "0.35,0.25,0.2,0.12,0.08", "--temperature", "0.7", "--fresh-fraction", "0.3"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"theta", "entropy", "kl", "a_max", "rho", "stable"} <= set(out)
    assert out == th.equilibrium(H5, 0.7, 0.3)


def test_cli_phase(tmp_path, capsys):
    out = tmp_path / "phase"
    assert main(["theory", "phase", "--h", "uniform", "--n", "5", "--temperatures", "0.5,0.7,0.9",
                 "--fresh-fractions", "0:1:0.01", "--out", str(out)]) == 0
    with open(out / "phase.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 101
    assert {"temperature", "fresh_fraction", "entropy", "kl", "rho", "stable"} <= set(rows[0])
    for r in rows:  # the linear boundary λ* = 1 − T
        lam, t = float(r["fresh_fraction"]), float(r["temperature"])
        if abs(lam - (1 - t)) > 1e-6:
            assert (r["stable"] == "True") == (lam > 1 - t), r
    assert os.path.getsize(out / "phase.png") > 1000
    assert json.loads(capsys.readouterr().out)["critical_fresh_fraction"] == pytest.approx([0.5, 0.3, 0.1], abs=1e-8)


def test_cli_simulate(tmp_path, capsys):
    assert main(["theory", "simulate", "--h", "uniform", "--n", "10", "--samples", "100", "--temperature", "1",
                 "--fresh-fraction", "0", "--workflow", "replace", "--seeds", "500", "--until-fixation"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fixed_seeds"] == 500
    assert abs(out["mean_generations_to_fixation"] / out["wright_fisher_prediction"] - 1) < 0.1
    assert main(["theory", "simulate", "--h", "0.5,0.3,0.2", "--temperature", "0.6", "--fresh-fraction", "0.1",
                 "--seeds", "8", "--generations", "12", "--out", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["mean_entropy"]) == 12 and os.path.getsize(tmp_path / "trajectories.png") > 1000
    with open(tmp_path / "trajectories.csv") as f:
        assert len(list(csv.DictReader(f))) == 12 * 8 + 12  # seeds, then the mean-field trajectory


@pytest.mark.parametrize("args,msg", [
    (["equilibrium", "--h", "0.5,0.6", "--temperature", "1", "--fresh-fraction", "0"], "--h must sum to 1"),
    (["equilibrium", "--h", "0.5,x", "--temperature", "1", "--fresh-fraction", "0"], "--h expects"),
    (["equilibrium", "--h", "uniform", "--n", "3", "--temperature", "-1", "--fresh-fraction", "0"], "--temperature"),
    (["equilibrium", "--h", "uniform", "--n", "3", "--temperature", "1", "--fresh-fraction", "1.5"], "--fresh-fraction"),
    (["equilibrium", "--h", "uniform", "--temperature", "1", "--fresh-fraction", "0"], "--n"),
    (["phase", "--h", "uniform", "--n", "3", "--temperatures", "0.5", "--fresh-fractions", "1:0:0.1", "--out", "x"],
     "--fresh-fractions"),
    (["simulate", "--h", "uniform", "--n", "3", "--fresh-fraction", "0.2", "--until-fixation"], "--until-fixation"),
    (["equilibrium", "--h", "uniform", "--n", "3", "--temperature", "hot", "--fresh-fraction", "0"], "invalid float"),
    (["--from-run", "/nonexistent/run"], "no such run directory"),
])
def test_cli_bad_input(args, msg, capsys):
    assert main(["theory", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("closedloop: error:") and msg in err and err.count("\n") == 1, err


def test_batched_stability_and_equilibria_match_the_single_categorical_ones():
    rng = np.random.default_rng(0)
    for t in (0.5, 0.8, 1.3, 2.0):
        theta = rng.dirichlet(np.ones(12), size=20)
        np.testing.assert_allclose(th.a_max_batch(theta, t), [th.a_max(x, t) for x in theta], rtol=1e-9)
    h = np.array([0.35, 0.25, 0.2, 0.12, 0.08])
    for t, lam in ((0.6, 0.5), (1.5, 0.3), (0.9, 0.05)):
        one, many = th.equilibrium(h, t, lam), th.context_equilibria(np.log(np.tile(h, (3, 1))), t, lam)
        assert many["entropy"] == pytest.approx(one["entropy"] / math.log(2), abs=1e-7)
        assert many["rho_max"] == pytest.approx(one["rho"], rel=1e-6) and many["converged_share"] == 1
    below = th.context_equilibria(np.log(np.full((1, 5), 0.2)), 0.6, 0.3)  # uniform H, λ < 1 − T: H is unstable
    assert below["rho_max"] == pytest.approx(0.7 / 0.6) and below["stable_share"] == 0


# --- overlay on a neural run ----------------------------------------------------------------------------------
def test_from_run_overlay(tmp_path, capsys):
    from training import presets
    from training.config import apply_overrides
    from training.loop import run_loop
    from training.prepare import prepare
    from training.records import read_metrics

    run = tmp_path / "run"
    os.makedirs(run / "gen_000")
    assert main(["theory", "--from-run", str(run)]) == 2  # no config.json
    assert "not a closedloop run directory" in capsys.readouterr().err
    cfg = apply_overrides(presets.debug(), {"loop.generations": "2", "loop.progress": "false",
                                            "sample.temperature": "0.7", "mix.fresh_fraction": "0.2"})
    os.rmdir(run / "gen_000")
    run_loop(prepare(cfg, str(run)), str(run), argv=[])
    before = read_metrics(str(run / "metrics.jsonl"))
    assert main(["theory", "--from-run", str(run)]) == 0
    printed = json.loads(capsys.readouterr().out)
    after = read_metrics(str(run / "metrics.jsonl"))
    assert len(after) == len(before) == 2
    for b, a in zip(before, after):
        assert {k: v for k, v in a.items() if not k.startswith("theory/")} == b  # nothing else lost or changed
        assert isinstance(a["theory/entropy"], float) and isinstance(a["theory/excess_nll"], float)
    # The debug val set has fewer than 4096 scored contexts: generation 0 is exactly the measured val/entropy.
    assert after[0]["theory/entropy"] == pytest.approx(after[0]["val/entropy"], abs=1e-4)
    assert after[0]["theory/excess_nll"] == 0 and after[1]["theory/excess_nll"] > 0
    assert after[1]["theory/entropy"] < after[0]["theory/entropy"]  # T = 0.7 sharpens
    assert printed["theory/entropy"] == pytest.approx([r["theory/entropy"] for r in after])
    assert after[0]["theory/bpc"] == pytest.approx(after[0]["val/bpc"]) and after[1]["theory/bpc"] > after[0]["val/bpc"]
    assert printed["verdict"] in ("collapse", "heat death", "stable", "drift", "undetermined")
    eq = printed["equilibrium"]  # T = 0.7, λ = 0.2 on a non-uniform H: a shifted, stable rest point
    assert eq["entropy_bits"] < after[0]["theory/entropy"] and 0 < eq["rho_max"] < 1 and eq["stable_share"] == 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run)).Reload()
    assert [e.step for e in acc.Scalars("theory/entropy")] == [0, 1]
    # A run without a finished generation 0 is refused.
    os.remove(run / "gen_000" / "DONE")
    assert main(["theory", "--from-run", str(run)]) == 2
    assert "gen_000/DONE" in capsys.readouterr().err


def test_cli_verdict_check(capsys):
    # the command's output form (the agreement itself is tested in tests/test_verdict.py on 80 trajectories)
    assert main(["theory", "verdict-check", "--trajectories", "8", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "| theory | n | agree | verdicts |" in out and "| **overall** | 8 |" in out
    for label in ("collapse", "heat death", "stable", "drift"):
        assert f"| {label} | 2 |" in out
    assert main(["theory", "verdict-check", "--trajectories", "2"]) == 2
    assert "--trajectories must be >= 4" in capsys.readouterr().err
