"""A verdict per closed-loop run (collapse, heat death, stable, drift or undetermined) from the dynamics of its
per-generation records (the dicts of metrics.jsonl), and its validation against the categorical theory.

Run inside the loop (`verdict_so_far(records, uniform_bits=log2 V)` after every generation) or on a finished run:
    python -c "from training.records import read_metrics; from training.verdict import verdict; \\
print(verdict(read_metrics('runs/NAME/metrics.jsonl')))"
Validate: `python -m training theory verdict-check` (labelled trajectories of training/theory.py, agreement table).
Test: `python -m pytest tests/test_verdict.py -q`

What the labels mean (the theory of Marchi et al. 2024; θ the model, H the real distribution):
  collapse     the model moves toward a corner: entropy falls toward 0 bits, top-1 probability rises toward 1;
  heat death   it moves toward uniform: entropy rises toward log2 V (`uniform_bits`), top-1 falls;
  stable       it has converged, within noise, to an equilibrium, possibly shifted from generation 0
               (`shift` = bits of val/entropy since generation 0): a loop that holds, shifted, is stable;
  drift        it moves away from the real data (val/bpc rises) without converging and without a consistent
               push toward either limit: the neutral wander of T = 1, λ = 0;
  undetermined too few generations, val/entropy unknown, or a tail too noisy to tell (the reason says which).

The rule. E = val/entropy (bits), P = val/top1, B = val/bpc (bits/char: cross-entropy on real text, i.e. the
distance from the real data; the loop fails by moving away from it). Missing, None or non-finite values are
skipped. The tail is the last max(MIN_TAIL, ceil(n/2)) of the n known values: "the last few generations". For each
indicator y (sigma = max(the tail's residual standard deviation around its least-squares line, FLOOR[y])):
  - tail slope (units per generation) and its direction: +1/-1 when |slope| > Z · sigma / sqrt(Σ(g − ḡ)²) (a
    2-sigma test) and |slope| > SLOW · |y_last − y_0| / (generations elapsed), else 0: is it still moving, and
    not merely creeping at the end of a relaxation?
  - shift = tail mean − y_0 and its direction: ±1 when |shift| > Z · sigma / sqrt(tail length): has it moved?
  - push: mean step (y_last − y_0) / (n − 1) over the standard error of the n − 1 steps (their sd, at least
    FLOOR[y] · √2, over √(n − 1)); a consistent push toward a limit when beyond Z: did every step go one way?
Then, in this order:
  1. n < MIN_GENERATIONS known values of E                                       -> undetermined (too short)
  2. toward the corner: E shifted down and P shifted up (P skipped when unknown); at the corner: tail mean of E
     <= NEAR_LIMIT · E_0 (10% of generation 0's entropy left). Symmetrically toward uniform: E shifted up, P down;
     at uniform: log2 V − E <= NEAR_LIMIT · (log2 V − E_0) (needs `uniform_bits`).
  3. converged: E's tail flat (within noise, or decelerated to <= SLOW of its average rate since generation 0),
     B's tail not rising (same test), and E's tail sigma <= NOISY · E_0. Converged past DEEP of the way to a
     limit it moved toward -> collapse / heat death (held there: a collapsed or heated equilibrium); otherwise
     -> stable, with the shift.
  4. not converged, toward a limit with E's tail not moving away from it, and either a consistent push (E's
     steps and, when known, P's go that way) or past DEEP of the way, or at the limit (a noisy or broken model
     sitting deep in the basin)
                                                                                 -> collapse / heat death
  5. B's tail falls, or is flat and not above generation 0, E has no consistent push and its tail is not noisy:
     the model does not move away from the real data (it may still learn it)      -> stable
  6. E's tail sigma > NOISY · E_0 with none of the above                          -> undetermined (too noisy)
  7. otherwise (moving away from the data or in entropy, no converged level, no consistent push) -> drift
Why each constant: MIN_GENERATIONS = 4 so that a tail of 3 follows generation 0 at all; MIN_TAIL = 3 values give
a slope and a residual (n − 2 = 1); Z = 2 standard errors (about 5% false alarms per test); FLOOR: the smallest
noise believed, 0.02 bits of entropy or bits/char and 0.005 of top-1 (a neural run's val set measures them no
better; below this a mean-field trajectory would never count as converged); SLOW = 0.5: a relaxation toward a level
decelerates (a geometric one with ratio r per step moves in its last half at about 2·r^(n/2) of its average rate:
half means ~85% of its way done), a push toward a limit at λ = 0 does not until it is there (at T < 1 it
accelerates), a random walk keeps its rate on average: "converged" for a trajectory without noise;
NEAR_LIMIT = 0.1 of the way left; DEEP = 0.5: past half-way to a limit is that limit's side (a convention; the validation keeps its labelled
equilibria >= 60% and its labelled collapses/heat deaths >= 60% of the way from it); NOISY = 0.1: a tail
scattering by 10% of the starting entropy cannot be called converged.
Numeric codes (CODES, for TensorBoard HParams): collapse -2, drift -1, stable 0, undetermined 1, heat death 2.
The sample-diversity keys (DIVERSITY, NOVEL) are not used by the rule (they depend on T and on the sample size);
their slopes and shifts are reported beside it.
"""
from __future__ import annotations

import math

import numpy as np

ENTROPY, TOP1, BPC = "val/entropy", "val/top1", "val/bpc"
DIVERSITY = ("samples/word_entropy", "samples/distinct_2")  # reported beside the verdict (their tail and shift)
NOVEL = "samples/novel_word_rate"
INDICATORS = (ENTROPY, TOP1, BPC, *DIVERSITY, NOVEL)

MIN_GENERATIONS = 4
MIN_TAIL = 3
Z = 2.0
FLOOR = {ENTROPY: 0.02, BPC: 0.02, TOP1: 0.005}  # units of each; others: 1% of |generation 0|, at least 1e-3
NEAR_LIMIT = 0.1
SLOW = 0.5
DEEP = 0.5
NOISY = 0.1
CODES = {"collapse": -2, "drift": -1, "stable": 0, "heat death": 2, "undetermined": 1}  # TensorBoard HParams:
# the sign says the direction of entropy (collapse < 0 < heat death); undetermined is 1, no direction claimed
RULE = ("tail = last half (>= 3); collapse: entropy shifted down and top-1 up, still moving or held at the corner, "
        "with a consistent push or past half-way; heat death: the same toward log2 V; stable: entropy's tail flat "
        "within 2 noise levels and val/bpc not rising (or val/bpc falling); drift: moving away (val/bpc rising) "
        "without either; undetermined: < 4 generations or a tail scattering > 10% of the starting entropy")


def _series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(generations, values) of one key, skipping records where it is missing, None, non-numeric or not finite."""
    gs, ys = [], []
    for i, r in enumerate(records):
        v = r.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        gs.append(float(r.get("generation", i)))
        ys.append(float(v))
    return np.array(gs), np.array(ys)


def dynamics(gens: np.ndarray, ys: np.ndarray, floor: float) -> dict | None:
    """Tail slope, shift since generation 0, consistency of the steps, and their directions; see the module rule.

    Units: those of y (per generation for slopes). None with fewer than MIN_TAIL values or a tail of one
    generation."""
    n = len(ys)
    m = max(MIN_TAIL, math.ceil(n / 2))
    if n < MIN_TAIL or np.ptp(gens[-m:]) == 0:
        return None
    tg, ty = gens[-m:], ys[-m:]
    g0 = tg - tg.mean()
    sxx = float((g0 ** 2).sum())
    slope = float((g0 * (ty - ty.mean())).sum() / sxx)
    resid = ty - ty.mean() - slope * g0
    sigma = max(math.sqrt(float((resid ** 2).sum()) / (m - 2)), floor)
    shift = float(ty.mean() - ys[0])
    rate = float(ys[-1] - ys[0]) / float(gens[-1] - gens[0])  # the average rate since generation 0
    steps = np.diff(ys)
    step_se = max(float(steps.std(ddof=1)) if len(steps) > 1 else 0.0, floor * math.sqrt(2)) / math.sqrt(len(steps))
    push = float(steps.mean() / step_se)
    return {"slope": slope, "sigma": sigma, "shift": shift, "tail_mean": float(ty.mean()), "push": push,
            "tail": int(np.sign(slope)) if abs(slope) > max(Z * sigma / math.sqrt(sxx), SLOW * abs(rate)) else 0,
            "moved": int(np.sign(shift)) if abs(shift) > Z * sigma / math.sqrt(m) else 0,
            "steady": int(np.sign(push)) if abs(push) > Z else 0, "first": float(ys[0]), "last": float(ys[-1])}


def verdict(records: list[dict], uniform_bits: float | None = None) -> dict:
    """The verdict of a run from its per-generation records (oldest first); see the module docstring.

    `uniform_bits`: log2 of the vocabulary size (bits), the entropy of the uniform next-token law, if known.
    Returns {"verdict", "code", "reason", "rule", "generations", "shift" (bits of val/entropy, tail mean − generation
    0; None when unknown), "slopes", "noise", "shifts", "tail"} (per indicator in its own units, None if unknown).
    """
    if uniform_bits is not None and not uniform_bits > 0:
        raise ValueError(f"uniform_bits must be > 0 (log2 of the vocabulary size), got {uniform_bits}")
    d = {}
    for k in INDICATORS:
        gs, ys = _series(records, k)
        d[k] = dynamics(gs, ys, FLOOR.get(k, max(1e-3, 0.01 * abs(ys[0]) if len(ys) else 0.0)))
    e, p, b = d[ENTROPY], d[TOP1], d[BPC]
    n = len(_series(records, ENTROPY)[1])
    out = {"rule": RULE, "generations": len(records), "shift": e["shift"] if e else None,
           "slopes": {k: v and v["slope"] for k, v in d.items()}, "noise": {k: v and v["sigma"] for k, v in d.items()},
           "shifts": {k: v and v["shift"] for k, v in d.items()}, "tail": max(MIN_TAIL, math.ceil(n / 2))}

    def done(name: str, reason: str) -> dict:
        return {"verdict": name, "code": CODES[name], **out, "reason": reason}

    if n < MIN_GENERATIONS or e is None:
        return done("undetermined", f"too short: {n} known value(s) of {ENTROPY}; {MIN_GENERATIONS} are needed "
                                    f"to compare a tail of {MIN_TAIL} with generation 0")
    u = uniform_bits
    toward = {-1: e["moved"] < 0 and (p is None or p["moved"] > 0),  # -1: the corner, +1: uniform
              +1: e["moved"] > 0 and (p is None or p["moved"] < 0)}
    at = {-1: e["tail_mean"] <= NEAR_LIMIT * e["first"],
          +1: u is not None and u > e["first"] and u - e["tail_mean"] <= NEAR_LIMIT * (u - e["first"])}
    deep = {-1: e["tail_mean"] <= DEEP * e["first"],
            +1: u is not None and u > e["first"] and u - e["tail_mean"] <= DEEP * (u - e["first"])}
    name = {-1: "collapse", +1: "heat death"}
    limit = {-1: "the corner (0 bits)", +1: f"uniform ({u:.3g} bits)" if u else "uniform"}
    noisy = e["sigma"] > NOISY * e["first"]
    bpc = "" if b is None else f", {BPC} {b['first']:.3g} -> {b['last']:.3g}"
    moves = f"{ENTROPY} {e['first']:.3g} -> {e['last']:.3g} bits (shift {e['shift']:+.3g}{bpc})"
    converged = e["tail"] == 0 and (b is None or b["tail"] <= 0) and not noisy
    if converged:
        for s in (-1, 1):
            if toward[s] and deep[s]:
                return done(name[s], f"{moves}: held past half-way to {limit[s]} over the last {out['tail']} "
                                     "generations")
        return done("stable", f"{moves}: converged within noise over the last {out['tail']} generations "
                              f"(tail slope {e['slope']:+.3g} bits/gen, noise {e['sigma']:.2g} bits)")
    for s in (-1, 1):
        push = e["steady"] == s and (p is None or p["steady"] == -s)
        if toward[s] and e["tail"] != -s and (push or deep[s] or at[s]):
            why = "entropy and top-1 step that way consistently" if push else "past half-way and not converged"
            return done(name[s], f"{moves}: moving toward {limit[s]}, {why}")
    if b is not None and (b["tail"] < 0 or (b["tail"] == 0 and b["moved"] <= 0)) and e["steady"] == 0 and not noisy:
        how = f"still falls {b['slope']:+.3g}/gen" if b["tail"] < 0 else "is no higher than at generation 0"
        return done("stable", f"{moves}: {BPC} {how} (the model does not move away from the real data, it may "
                              f"still learn it); {ENTROPY} has no consistent push")
    if noisy:
        return done("undetermined", f"too noisy: {ENTROPY}'s tail scatters by {e['sigma']:.2g} bits, more than "
                                    f"{NOISY:.0%} of its generation-0 value, with no clear direction")
    what = f"{BPC} still rises {b['slope']:+.3g}/gen" if b is not None and b["tail"] > 0 else \
        f"{ENTROPY} still moves {e['slope']:+.3g} bits/gen"
    return done("drift", f"{moves}: {what} without converging and without a consistent push toward a limit")


def verdict_so_far(records: list[dict], generation: int | None = None, uniform_bits: float | None = None
                   ) -> dict:
    """`verdict` on the prefix of records up to and including `generation` (all records when None): what the
    loop reports after each generation."""
    if generation is not None:
        records = [r for i, r in enumerate(records) if r.get("generation", i) <= generation]
    return verdict(records, uniform_bits=uniform_bits)


# --- validation against the categorical theory (training/theory.py) ----------------------------------------------
CLASSES = ("collapse", "heat death", "stable", "drift")


def _records(theta: np.ndarray, h: np.ndarray, temperature: float, rng: np.random.Generator) -> list[dict]:
    """Stand-in records of a categorical trajectory θ (G, K): val/entropy = H(θ) bits, val/top1 = max θ,
    val/bpc = cross-entropy of H under 0.99·θ + 0.01·uniform in bits (a neural model never gives probability 0),
    samples/word_entropy = plug-in entropy (bits) of 1000 draws from τ_T(θ); no distinct_2, no novel words."""
    from training import theory as th

    k = theta.shape[-1]
    smooth = 0.99 * theta + 0.01 / k
    draws = rng.multinomial(1000, th.tau(theta, temperature)) / 1000.0
    ent, ce = th.entropy(theta) / math.log(2), -(h * np.log2(smooth)).sum(-1)
    sample_ent = th.entropy(draws) / math.log(2)
    return [{"generation": g, ENTROPY: float(ent[g]), TOP1: float(theta[g].max()), BPC: float(ce[g]),
             "samples/word_entropy": float(sample_ent[g]), "samples/distinct_2": None, NOVEL: None}
            for g in range(len(theta))]


def labelled_trajectories(count: int, seed: int = 0) -> list[dict]:
    """`count` trajectories of the categorical closed loop whose fate the theory knows, balanced over CLASSES;
    deterministic from `seed`. Each: {"label", "records", "uniform_bits", "setting"}.

    Drawn per trajectory: K in {5, 10, 20, 50, 100, 200}; H uniform or Zipf (p_i ∝ i^−s, s in [0.5, 1.5]);
    G in 6..20 generations; N in {300, 1000, 3000, 10^4, 10^5} samples per generation; workflow replace,
    accumulate or accumulate-subsample (drift: replace). One finite-sample run of `theory.simulate`. The label is
    the theory's fate, kept only where it is unambiguous within the horizon (else the setting is drawn again):
      collapse    T in [0.3, 0.85], λ = 0 (the corner is the only attractor), H not uniform (from a uniform H only
                  noise breaks the symmetry, at an unknown time); the mean-field trajectory loses >= 60% of H's
                  entropy within G generations (a collapse one can see, past the half-way convention);
      heat death  T in [1.25, 3], λ = 0, H not uniform with log2 K − H(H) >= 10% of log2 K (room to heat),
                  N >= 10·K (fewer draws than that cannot hold a near-uniform θ: the refit loses outcomes and the
                  finite-sample loop turns back); the mean-field trajectory closes >= 60% of the gap in G gens;
      stable      T in [0.4, 2.5], λ in [0.1, 1]; H uniform only above the boundary λ*(T) = 1 − T by 0.05 or
                  more (below it H is unstable) and not for T > 1 (there H is the uniform limit itself); the
                  mean-field map is iterated to rest (its attractor θ_∞), which it must reach: within 10% of the
                  total change of entropy (or 0.005 bits) by generation ceil(G/2), a clear equilibrium, away
                  from both limits (it keeps >= 60% of H's entropy and >= 60% of H's gap to log2 K);
      drift       T = 1, λ = 0, replace, H Zipf (from a uniform H, the entropy maximum, every move lowers the
                  entropy and raises top-1: neutral drift there looks exactly like a slow collapse, so it is not
                  labelled), N = c·K with c in [2, 50] (log-uniform), N <= 10^5; the theory's expected departure
                  E[KL(H‖θ_G)] ≈ (G − 1)(K − 1)/(2N) nats must exceed 0.1 bits (a wander one can see), Kimura's
                  expected fixation time must exceed 3·G, and the run is kept only if no outcome fixed (mass >=
                  1 − 1e-9) within the horizon. Accumulate workflows are not used at T = 1 (θ becomes a martingale
                  with shrinking steps that settles at a random point: neither label is clean).
    Known limit: a short random walk and a noisy mean-reverting series look alike over 6–20 points, so drift and
    stable are the classes that confuse each other (see `closedloop theory verdict-check`).
    """
    from training import theory as th

    rng = np.random.default_rng(seed)
    out = []
    while len(out) < count:
        label = CLASSES[len(out) % len(CLASSES)]
        k = int(rng.choice([5, 10, 20, 50, 100, 200]))
        zipf = label != "stable" or rng.random() < 0.7
        h = np.arange(1, k + 1) ** -rng.uniform(0.5, 1.5) if zipf else np.ones(k)
        h = h / h.sum()
        gens = int(rng.integers(6, 21))
        n = int(rng.choice([300, 1000, 3000, 10_000, 100_000]))
        wf = "replace" if label == "drift" else str(rng.choice(th.WORKFLOWS, p=[0.5, 0.25, 0.25]))
        e0, u = float(th.entropy(h)) / math.log(2), math.log2(k)
        if label == "collapse":
            t, lam = rng.uniform(0.3, 0.85), 0.0
        elif label == "heat death":
            t, lam = rng.uniform(1.25, 3.0), 0.0
            if u - e0 < 0.1 * u or n < 10 * k:
                continue
        elif label == "stable":
            t, lam = rng.uniform(0.4, 2.5), rng.uniform(0.1, 1.0)
            if not zipf and (t > 1 or lam < 1 - t + 0.05):
                continue
        else:
            t, lam = 1.0, 0.0
            n = int(min(1e5, k * math.exp(rng.uniform(math.log(2), math.log(50)))))
            if (gens - 1) * (k - 1) / (2 * n) < 0.1 * math.log(2) or th.wright_fisher_fixation_time(h, n) < 3 * gens:
                continue
        mf = th.entropy(th.mean_field_trajectory(h, h, t, lam, gens, wf)) / math.log(2)  # (G,) bits
        if label == "collapse" and mf[-1] > 0.4 * e0:
            continue
        if label == "heat death" and u - mf[-1] > 0.4 * (u - e0):
            continue
        if label == "stable":
            rest, ok = th.iterate_to_rest(h[None], h, t, lam, max_iter=5000, tol=1e-10)
            e_inf = float(th.entropy(rest[0])) / math.log(2)
            half = mf[math.ceil(gens / 2)]
            if not ok[0] or abs(half - e_inf) > max(0.1 * abs(e0 - e_inf), 0.005):
                continue
            if e_inf < 0.6 * e0 or (e_inf > e0 and u - e_inf < 0.6 * (u - e0)):
                continue
        theta = th.simulate(h, t, lam, n, gens, 1, rng, workflow=wf)["theta"][:, 0]  # (G, K)
        if label == "drift" and theta.max() >= 1 - 1e-9:
            continue
        out.append({"label": label, "records": _records(theta, h, t, rng), "uniform_bits": u,
                    "setting": {"K": k, "H": "zipf" if zipf else "uniform", "T": float(t), "lambda": float(lam),
                                "N": n, "generations": gens, "workflow": wf}})
    return out


def agreement(trajectories: list[dict]) -> dict:
    """Run the verdict on labelled trajectories: {"classes": {label: {"n", "agree", "rate", "verdicts": {verdict:
    count}}}, "overall": rate, "n": count}."""
    table = {c: {"n": 0, "agree": 0, "verdicts": {}} for c in CLASSES}
    for tr in trajectories:
        v = verdict(tr["records"], uniform_bits=tr["uniform_bits"])["verdict"]
        row = table[tr["label"]]
        row["n"] += 1
        row["agree"] += v == tr["label"]
        row["verdicts"][v] = row["verdicts"].get(v, 0) + 1
    for row in table.values():
        row["rate"] = row["agree"] / row["n"] if row["n"] else math.nan
    total = sum(r["n"] for r in table.values())
    return {"classes": table, "overall": sum(r["agree"] for r in table.values()) / max(total, 1), "n": total}
