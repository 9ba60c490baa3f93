"""The paper's closed-loop model of one categorical (Marchi et al. 2024), simulated exactly. numpy only.

θ is a point of the simplex over n outcomes; sampling at temperature T draws from τ_T(θ)_i ∝ θ_i^(1/T) (zeros stay
zero; T = 0 is the argmax corner, ties split evenly, the T → 0 limit). Each generation trains on a fraction λ of
fresh samples of the real distribution H and (1 − λ) of samples of τ_T(θ):
- mean-field map (infinitely many samples): θ ← F(θ) = (1 − λ)·τ_T(θ) + λ·H; refitting a fraction r of the way is
  θ ← (1 − r)·θ + r·F(θ) (same fixed points, same stability);
- finite samples (`simulate`): N multinomial draws per generation, many seeds at once, workflows replace /
  accumulate / accumulate-subsample as in the neural loop.
Analytics: the equilibrium θ_e on the branch continued from λ = 1 (θ_e = H there), its stability ρ = (1 − λ)·a_max
with a_max the largest eigenvalue of ∂τ_T/∂θ at θ_e on sum-zero vectors (stable iff ρ < 1; for uniform H,
a_max = 1/T and λ* = 1 − T), the λ = 0 end states, and the Wright–Fisher fixation time at T = 1, λ = 0.
Entropies and KL divergences are in nats. CLI: `closedloop theory ...` (training/theory_cli.py);
tests: `python -m pytest tests/test_theory.py -q`.
"""
from __future__ import annotations

import math

import numpy as np

WORKFLOWS = ("replace", "accumulate", "accumulate-subsample")


# --- checks of user input (ValueError naming the option) --------------------------------------------------------
def check_distribution(h, name: str = "h") -> np.ndarray:
    h = np.asarray(h, dtype=float).reshape(-1)
    if h.size < 1 or not np.all(np.isfinite(h)) or np.any(h < 0):
        raise ValueError(f"{name} must be non-negative finite numbers, got {h.tolist()}")
    if abs(h.sum() - 1.0) > 1e-6:
        raise ValueError(f"{name} must sum to 1, got sum {h.sum():.6g}")
    return h / h.sum()


def check_temperature(t: float, name: str = "temperature") -> float:
    if not (math.isfinite(t) and t >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {t}")
    return float(t)


def check_fraction(x: float, name: str = "fresh fraction") -> float:
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {x}")
    return float(x)


# --- measures (nats) ----------------------------------------------------------------------------------------------
def entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy over the last axis, nats (0·log 0 = 0)."""
    p = np.asarray(p, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 0.0 - np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=-1)  # 0.0 − : no −0.0


def kl(h: np.ndarray, p: np.ndarray) -> np.ndarray:
    """KL(h ‖ p) over the last axis, nats; inf where p misses mass of h."""
    h, p = np.asarray(h, dtype=float), np.asarray(p, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sum(np.where(h > 0, h * (np.log(h) - np.log(p)), 0.0), axis=-1)


# --- the sampling map and the mean-field map ---------------------------------------------------------------------
def log_tau(log_theta: np.ndarray, temperature) -> np.ndarray:
    """log τ_T(θ) from log θ (..., n); temperature is a scalar or one per row (...). Stable for small T."""
    log_theta = np.asarray(log_theta, dtype=float)
    t = np.broadcast_to(np.asarray(temperature, dtype=float), log_theta.shape[:-1])[..., None]
    top = log_theta.max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (log_theta - top) / np.where(t > 0, t, 1.0)  # (..., n), max 0, zeros stay -inf
        z = np.where(t > 0, z, np.where(log_theta == top, 0.0, -np.inf))  # T = 0: the argmax set, ties split
        return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def tau(theta: np.ndarray, temperature) -> np.ndarray:
    """τ_T(θ)_i = θ_i^(1/T) / Σ_j θ_j^(1/T) over the last axis; T = 0 gives the argmax corner."""
    with np.errstate(divide="ignore"):
        return np.exp(log_tau(np.log(np.asarray(theta, dtype=float)), temperature))


def mean_field_step(theta, h, temperature, fresh_fraction, fit_rate: float = 1.0) -> np.ndarray:
    """One generation of the mean-field map, θ ← (1 − r)·θ + r·[(1 − λ)·τ_T(θ) + λ·H]; λ may be one per row."""
    lam = np.asarray(fresh_fraction, dtype=float)[..., None] if np.ndim(fresh_fraction) else fresh_fraction
    new = (1.0 - lam) * tau(theta, temperature) + lam * np.asarray(h, dtype=float)
    return new if fit_rate == 1.0 else (1.0 - fit_rate) * np.asarray(theta) + fit_rate * new


def mean_field_trajectory(theta0, h, temperature, fresh_fraction, generations: int,
                          workflow: str = "replace", fit_rate: float = 1.0) -> np.ndarray:
    """θ_0 … θ_{G−1}, shape (G, ..., n). `accumulate` (and, in expectation, `accumulate-subsample`): the model is
    the pool of every generation's data, generation 0's included, θ_g = (g·θ_{g−1} + F(θ_{g−1})) / (g + 1)."""
    if workflow not in WORKFLOWS:
        raise ValueError(f"workflow must be one of {', '.join(WORKFLOWS)}, got {workflow!r}")
    out = [np.asarray(theta0, dtype=float)]
    for g in range(1, generations):
        new = mean_field_step(out[-1], h, temperature, fresh_fraction, 1.0)
        if workflow != "replace":
            new = (g * out[-1] + new) / (g + 1)
        out.append((1.0 - fit_rate) * out[-1] + fit_rate * new)
    return np.stack(out)


def context_predictions(log_theta0: np.ndarray, targets: np.ndarray, temperature: float, fresh_fraction: float,
                        generations: int, workflow: str = "replace") -> dict:
    """Many categoricals at once (one per context, rows of log θ0 (C, V)), H_c = θ0_c, in log space so that
    sharpened tails (θ^(T^−g)) do not underflow. Per generation g: `entropy` (C-mean next-token entropy, bits),
    `top1` (C-mean largest probability) and `excess_nll` (C-mean of −log θ_g(target) + log θ_0(target),
    nats/token), arrays of shape (G,)."""
    if workflow not in WORKFLOWS:
        raise ValueError(f"workflow must be one of {', '.join(WORKFLOWS)}, got {workflow!r}")
    log_h = np.asarray(log_theta0, dtype=float)
    log_h = log_h - np.logaddexp.reduce(log_h, axis=-1, keepdims=True)  # exact normalisation
    rows = np.arange(len(log_h))
    lt, ent, exc, top = log_h, [], [], []
    with np.errstate(divide="ignore", invalid="ignore"):
        a = math.log1p(-fresh_fraction) if fresh_fraction < 1 else -math.inf  # log(1 − λ)
        b = math.log(fresh_fraction) if fresh_fraction > 0 else -math.inf  # log λ
        for g in range(generations):
            if g > 0:
                new = np.logaddexp(a + log_tau(lt, temperature), b + log_h)  # log F(θ)
                lt = new if workflow == "replace" else np.logaddexp(math.log(g / (g + 1)) + lt, new - math.log(g + 1))
            p = np.exp(lt)
            ent.append(float(np.mean(-np.sum(np.where(p > 0, p * lt, 0.0), axis=-1))) / math.log(2))
            exc.append(float(np.mean(log_h[rows, targets] - lt[rows, targets])))
            top.append(float(np.mean(p.max(axis=-1))))
    return {"entropy": np.array(ent), "excess_nll": np.array(exc), "top1": np.array(top)}


def a_max_batch(theta: np.ndarray, temperature: float, iters: int = 100) -> np.ndarray:
    """`a_max` for many categoricals at once, rows of θ (C, V) with full support (a softmax's), any V: (C,).

    The largest eigenvalue of (diag(d) − u·uᵀ)/T (d = τ/θ, u = √θ·d; see `a_max`) lies between the two largest
    entries of d (a rank-one downdate interlaces), where it is the root of the secular equation
    Σ_i u_i² / (d_i − x) = 1, increasing in x there: bisection, O(C·V) per step, no V × V matrix (a GPT-2
    vocabulary has V = 50,257). Equal top entries of d: the eigenvalue is that entry."""
    theta = np.asarray(theta, dtype=float)
    if temperature <= 0:
        raise ValueError(f"a_max_batch needs temperature > 0, got {temperature}")
    d = tau(theta, temperature) / theta  # (C, V)
    u2 = theta * d * d
    top2 = -np.partition(-d, 1, axis=-1)[:, :2]  # (C, 2): largest, second largest
    lo, hi = top2[:, 1].copy(), top2[:, 0].copy()
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.sum(u2 / (d - mid[:, None]), axis=-1)  # increasing on (second, largest)
        below = np.isfinite(g) & (g < 1.0)
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return 0.5 * (lo + hi) / temperature


def context_equilibria(log_h: np.ndarray, temperature: float, fresh_fraction: float, max_iter: int = 5000,
                       tol: float = 1e-10) -> dict:
    """The equilibrium θ_e = (1 − λ)·τ_T(θ_e) + λ·H_c of every context (rows of log H (C, V)), reached by iterating
    the mean-field map in log space from H_c (vectorised; the branch a run starts on), and its stability
    ρ_c = (1 − λ)·a_max(θ_e,c) (stable iff ρ_c < 1). Returns `entropy` (C-mean entropy of θ_e, bits), `top1`
    (C-mean largest probability), `rho_max`, `stable_share` (share of contexts with ρ_c < 1) and `converged_share`
    (share whose iteration came to rest within max_iter: near ρ = 1 it slows down, and λ = 0 at T ≠ 1 goes to a
    limit, not a rest point, so few or none converge there)."""
    lt = np.asarray(log_h, dtype=float)
    lt = lt - np.logaddexp.reduce(lt, axis=-1, keepdims=True)
    log_h = lt
    lam = check_fraction(fresh_fraction)
    done = np.zeros(len(lt), dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = math.log1p(-lam) if lam < 1 else -math.inf
        b = math.log(lam) if lam > 0 else -math.inf
        for _ in range(max_iter):
            new = np.logaddexp(a + log_tau(lt, temperature), b + log_h)
            step = np.abs(np.exp(new) - np.exp(lt)).max(axis=-1)  # (C,) largest probability change
            lt = new
            done |= step < tol
            if done.all():
                break
    p = np.exp(lt)
    ent = -np.sum(np.where(p > 0, p * lt, 0.0), axis=-1) / math.log(2)
    rho = (1 - lam) * a_max_batch(np.clip(p, 1e-300, None), temperature) if temperature > 0 and lam < 1 else \
        np.zeros(len(p))
    return {"entropy": float(ent.mean()), "top1": float(p.max(axis=-1).mean()), "rho_max": float(rho.max()),
            "stable_share": float(np.mean(rho < 1)), "converged_share": float(done.mean())}


def iterate_to_rest(theta0, h, temperature, fresh_fraction, max_iter: int = 20_000, tol: float = 1e-13):
    """Iterate the mean-field map on a batch (B, n) until max |Δθ| < tol; T and λ one per row. -> (θ, converged)."""
    theta = np.array(theta0, dtype=float)
    b = theta.shape[0]
    t = np.broadcast_to(np.asarray(temperature, dtype=float), (b,)).copy()
    lam = np.broadcast_to(np.asarray(fresh_fraction, dtype=float), (b,)).copy()
    done = np.zeros(b, dtype=bool)
    active = np.arange(b)
    for it in range(max_iter):
        x = theta[active]
        new = mean_field_step(x, h, t[active], lam[active])
        theta[active] = new
        if it % 20 == 19 or it == max_iter - 1:  # drop rows at rest (cheap marginal rows keep going)
            rest = np.abs(new - x).max(axis=-1) < tol
            done[active[rest]] = True
            active = active[~rest]
            if active.size == 0:
                break
    return theta, done


# --- equilibrium and its stability --------------------------------------------------------------------------------
def tau_jacobian(theta: np.ndarray, temperature: float) -> np.ndarray:
    """∂τ_T/∂θ (n, n) at θ > 0: (1/T)·(diag(τ/θ) − τ·(τ/θ)ᵀ). Its columns sum to 0: it maps into sum-zero vectors."""
    tt = tau(theta, temperature)
    d = tt / theta
    return (np.diag(d) - np.outer(tt, d)) / temperature


def a_max(theta: np.ndarray, temperature: float) -> float:
    """Largest eigenvalue of ∂τ_T/∂θ on sum-zero vectors within the support of θ (perturbations keep zeros zero).

    With d = τ/θ, diag(θ)^(−1/2)·J·diag(θ)^(1/2) = (diag(d) − u·uᵀ)/T with u = √θ·d, symmetric: real eigenvalues,
    one of them 0 (eigenvector √θ, the direction off the simplex), the others >= min d / T > 0."""
    s = theta > 0
    if s.sum() < 2:
        return 0.0
    th = theta[s]
    if temperature == 0:  # τ_0 is locally constant unless the argmax is tied
        return 0.0 if np.sum(th == th.max()) == 1 else math.inf
    d = tau(th, temperature) / th
    u = np.sqrt(th) * d
    return float(np.linalg.eigvalsh(np.diag(d) - np.outer(u, u)).max() / temperature)


def _tangent_basis(m: int) -> np.ndarray:
    """(m, m − 1) orthonormal basis of the sum-zero vectors (the simplex's tangent space)."""
    if m < 2:
        return np.zeros((m, 0))
    return np.linalg.qr(np.vstack([np.eye(m - 1), -np.ones((1, m - 1))]))[0]


def _newton(theta, h, temperature, lam, q, tol=1e-14, max_iter=60):
    """Solve θ = (1 − λ)τ_T(θ) + λH on the support of H, in sum-zero coordinates (q: orthonormal basis)."""
    eye = np.eye(len(theta))
    for _ in range(max_iter):
        g = theta - (1 - lam) * tau(theta, temperature) - lam * h
        if np.abs(g).max() < tol:
            return theta, True
        a = q.T @ (eye - (1 - lam) * tau_jacobian(theta, temperature)) @ q
        try:
            step = q @ np.linalg.solve(a, -(q.T @ g))
        except np.linalg.LinAlgError:
            return theta, False
        s = 1.0
        while np.any(theta + s * step <= 0) and s > 1e-12:  # stay inside the simplex
            s /= 2
        theta = theta + s * step
        theta /= theta.sum()
    g = theta - (1 - lam) * tau(theta, temperature) - lam * h
    return theta, bool(np.abs(g).max() < 1e-12)


def equilibrium_path(h, temperature: float, fresh_fractions, max_step: float = 0.02):
    """θ_e at each λ of `fresh_fractions`, continued from λ = 1 (θ_e = H) downward by Newton steps.

    Returns (thetas (L, n) in the order given, branch: list of "continued" | "attractor"). If the branch folds (no
    Newton step of size > 1e-7 converges), the map is iterated from the last point to its attractor ("attractor")."""
    h = check_distribution(h)
    temperature = check_temperature(temperature)
    lams = np.array([check_fraction(x) for x in np.atleast_1d(fresh_fractions)], dtype=float)
    order = np.argsort(-lams, kind="stable")
    s = h > 0
    m = int(s.sum())
    q = _tangent_basis(m)
    out, branch = np.zeros((len(lams), len(h))), [""] * len(lams)
    theta, lam, how = h[s].copy(), 1.0, "continued"
    for i in order:
        target = lams[i]
        if temperature == 0:  # τ_0 is piecewise constant: the map reaches its fixed point in two steps
            theta = h[s].copy()
            for _ in range(3):
                theta = mean_field_step(theta, h[s], 0.0, target)
        elif m > 1:
            step = max_step
            while lam > target and how == "continued":
                nxt = max(target, lam - step)
                new, ok = _newton(theta, h[s], temperature, nxt, q)
                if ok:
                    theta, lam = new, nxt
                elif step > 1e-7:
                    step /= 2
                else:
                    how = "attractor"
            if how == "attractor":
                rest = iterate_to_rest(theta[None], h[s], temperature, target, max_iter=200_000)[0][0]
                theta = _newton(rest, h[s], temperature, target, q)[0]
        lam = target
        if target == 0 and 0 < temperature < 1 and theta.max() > 1 - 1e-9:
            theta = tau(theta, 0.0)  # the branch's λ → 0 limit is the corner itself (left at ~1e-17 by Newton)
        out[i, s], branch[i] = theta, how
    return out, branch


def equilibrium(h, temperature: float, fresh_fraction: float) -> dict:
    """θ_e(λ, T) with entropy (nats), kl = KL(H‖θ_e) (nats), top1, a_max, rho = (1 − λ)·a_max, stable = rho < 1."""
    h = check_distribution(h)
    (theta,), (branch,) = equilibrium_path(h, temperature, [fresh_fraction])
    am = a_max(theta, temperature)
    rho = 0.0 if fresh_fraction == 1 else (1 - fresh_fraction) * am
    residual = float(np.abs(theta - mean_field_step(theta, h, temperature, fresh_fraction)).max())
    return {"theta": theta.tolist(), "entropy": float(entropy(theta)), "kl": float(kl(h, theta)),
            "top1": float(theta.max()), "a_max": am, "rho": rho, "stable": bool(rho < 1),
            "residual": residual, "branch": branch}


def critical_fresh_fraction(temperatures, h, tol: float = 1e-10) -> np.ndarray:
    """Predicted stability boundary λ*(T): the smallest λ at which θ_e (continued from λ = 1) is stable, ρ <= 1.

    One value per temperature. For uniform H this is max(0, 1 − T) (a_max = 1/T at θ_e = H). For H with a unique
    largest entry the branch from H slides smoothly to the argmax corner and stays stable: λ* = 0, and collapse
    shows as a growing KL(H‖θ_e) rather than a sharp boundary. ρ = 1 exactly (T = 1, λ = 0) counts as stable."""
    h = check_distribution(h)
    s, q = h > 0, _tangent_basis(int(np.sum(h > 0)))
    grid = np.round(np.linspace(1.0, 0.0, 101), 12)
    out = []
    for t in np.atleast_1d(np.asarray(temperatures, dtype=float)):
        thetas, _ = equilibrium_path(h, t, grid)
        rho = np.array([(1 - lam) * a_max(th, t) for lam, th in zip(grid, thetas)])
        bad = np.flatnonzero(rho > 1 + 1e-9)
        if bad.size == 0:
            out.append(0.0)
            continue
        lo, hi, th = grid[bad[0]], grid[bad[0] - 1], thetas[bad[0] - 1][s]  # ρ(lo) > 1 >= ρ(hi): bisect
        while hi - lo > tol:
            mid = (lo + hi) / 2
            new, ok = _newton(th, h[s], t, mid, q)
            if ok and (1 - mid) * a_max(new, t) <= 1 + 1e-9:
                hi, th = mid, new
            else:
                lo = mid
        out.append(float(hi))
    return np.array(out)


def collapse_fold_fresh_fraction(temperatures, n: int) -> np.ndarray:
    """Uniform H over n outcomes, T < 1: the largest λ at which a collapsed equilibrium (one outcome at a > 1/n,
    the others equal) still exists. Between 1 − T and this λ the loop is bistable: started near a corner it stays
    collapsed although H is linearly stable. From a = (1 − λ)·τ_a + λ/n: λ(a) = (a − τ_a)/(1/n − τ_a), maximised."""
    a = np.linspace(1.0 / n, 1.0, 200_001)[1:-1]
    b = (1 - a) / (n - 1)
    out = []
    for t in np.atleast_1d(np.asarray(temperatures, dtype=float)):
        if t >= 1 or t <= 0:
            out.append(0.0 if t >= 1 else 1.0)  # T = 0: a = (1 − λ) + λ/n > 1/n for every λ < 1
            continue
        ta = 1.0 / (1.0 + (n - 1) * np.exp((np.log(b) - np.log(a)) / t))
        out.append(float(np.max((a - ta) / (1.0 / n - ta))))
    return np.array(out)


def simulated_critical_fresh_fraction(h, temperature: float, start: str = "corner", step: float = 0.01,
                                      max_iter: int = 20_000, tol: float = 1e-6) -> float:
    """Smallest λ on a grid of `step` from which the mean-field map, started near a corner of argmax H ("corner":
    0.99·e_k + 0.01·H) or near H ("h": H + 0.001·(e_k − H)), comes back to θ_e, as it does at every larger λ.

    From near H this is the linear boundary (the first grid λ with ρ < 1); from near a corner it is the upper edge
    of the bistable band, `collapse_fold_fresh_fraction` for uniform H (the model has hysteresis)."""
    h = check_distribution(h)
    grid = np.round(np.arange(0.0, 1.0 + step / 2, step), 10)
    theta_e, _ = equilibrium_path(h, temperature, grid)
    corner = np.eye(len(h))[np.argmax(h)]
    theta0 = 0.99 * corner + 0.01 * h if start == "corner" else h + 1e-3 * (corner - h)
    final, _ = iterate_to_rest(np.tile(theta0, (len(grid), 1)), h, temperature, grid, max_iter=max_iter)
    back = np.abs(final - theta_e).max(axis=-1) < tol
    if not back[-1]:
        return math.inf
    off = np.flatnonzero(~back)
    return float(grid[off[-1] + 1]) if off.size else 0.0


def phase_table(h, temperatures, fresh_fractions, max_iter: int = 20_000) -> list[dict]:
    """One row per (T, λ) of the mean-field map, replace workflow.

    `rho`, `stable`: linear stability of θ_e (continued from λ = 1): rho = (1 − λ)·a_max, stable = rho < 1.
    The map is iterated from two starts, near H and near the corner of argmax H (see
    `simulated_critical_fresh_fraction`), for at most max_iter generations; `entropy`, `kl` (nats) are those of the
    worse end state (the larger KL(H‖θ)), each start's also reported (`*_near_h`, `*_near_corner`).
    `bistable`: θ_e is stable but the corner start does not come back to it (hysteresis band)."""
    h = check_distribution(h)
    temps = np.array([check_temperature(float(t)) for t in np.atleast_1d(temperatures)])
    lams = np.array([check_fraction(float(x)) for x in np.atleast_1d(fresh_fractions)])
    corner = np.eye(len(h))[np.argmax(h)]
    starts = np.stack([h + 1e-3 * (corner - h), 0.99 * corner + 0.01 * h])  # (2, n)
    tt, ll, ss = np.meshgrid(temps, lams, [0, 1], indexing="ij")  # (nT, nλ, 2)
    final, _ = iterate_to_rest(starts[ss.ravel()], h, tt.ravel(), ll.ravel(), max_iter=max_iter)
    final = final.reshape(len(temps), len(lams), 2, len(h))
    ent, div = entropy(final), kl(h, final)  # (nT, nλ, 2)
    rows = []
    for i, t in enumerate(temps):
        theta_e, _ = equilibrium_path(h, t, lams)
        for j, lam in enumerate(lams):
            rho = 0.0 if lam == 1 else (1 - lam) * a_max(theta_e[j], t)
            worse = int(div[i, j, 1] > div[i, j, 0])
            back = np.abs(final[i, j, 1] - theta_e[j]).max() < 1e-6
            rows.append({"temperature": float(t), "fresh_fraction": float(lam), "entropy": float(ent[i, j, worse]),
                         "kl": float(div[i, j, worse]), "rho": float(rho), "stable": bool(rho < 1),
                         "bistable": bool(rho < 1 and not back),
                         "entropy_near_h": float(ent[i, j, 0]), "kl_near_h": float(div[i, j, 0]),
                         "entropy_near_corner": float(ent[i, j, 1]), "kl_near_corner": float(div[i, j, 1])})
    return rows


# --- λ = 0 and finite samples ----------------------------------------------------------------------------------
def end_state(theta0, temperature: float) -> np.ndarray:
    """Where the mean-field map goes at λ = 0: T < 1 the argmax corner (ties split), T > 1 uniform on the support,
    T = 1 nowhere (every θ is fixed; finite samples drift to a corner, see `wright_fisher_fixation_time`)."""
    theta0 = np.asarray(theta0, dtype=float)
    if temperature < 1:
        return tau(theta0, 0.0)
    if temperature > 1:
        return (theta0 > 0) / np.sum(theta0 > 0, axis=-1, keepdims=True)
    return theta0.copy()


def entropy_drift_sign(temperature: float) -> int:
    """Sign of the entropy change per generation at λ = 0: sign(T − 1) (τ_T^g(θ) ∝ θ^(T^−g), entropy monotone)."""
    return int(np.sign(temperature - 1.0))


def wright_fisher_fixation_time(p, samples: int) -> float:
    """Expected generations until one outcome remains, T = 1, λ = 0, replace with N samples (haploid
    Wright–Fisher, diffusion limit, Kimura): −2N·Σ_i (1 − p_i)·ln(1 − p_i)."""
    p = np.asarray(p, dtype=float)
    q = 1.0 - p
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(-2.0 * samples * np.sum(np.where(q > 0, q * np.log(q), 0.0)))


def simulate(h, temperature: float, fresh_fraction: float, samples: int, generations: int, seeds: int,
             rng: np.random.Generator, workflow: str = "replace", fit_rate: float = 1.0, noise: float = 0.0,
             theta0=None, until_fixation: bool = False) -> dict:
    """Finite-sample closed loop for `seeds` independent runs at once (rows of (S, n) arrays).

    Generation 0 is θ0 (default H). Generation g >= 1 draws round(λN) samples of H and the rest of τ_T(θ_{g−1})
    (multinomial counts); `replace` fits their frequencies, `accumulate` the frequencies of the pool of every
    generation's data (generation 0 counts as N samples of θ0), `accumulate-subsample` of N draws (with replacement)
    from that pool. Fitting moves θ a fraction `fit_rate` of the way, then adds zero-mean Gaussian noise of standard
    deviation `noise` on the support (sum-zero, then clipped at 0 and renormalised).
    Returns {"theta": (G, S, n)} or, with until_fixation, {"fixation": (S,) the first generation at which one
    outcome holds mass >= 1 − 1e-12, −1 if none within `generations`}."""
    h = check_distribution(h)
    temperature, lam = check_temperature(temperature), check_fraction(fresh_fraction)
    if workflow not in WORKFLOWS:
        raise ValueError(f"workflow must be one of {', '.join(WORKFLOWS)}, got {workflow!r}")
    for name, v in (("samples", samples), ("generations", generations), ("seeds", seeds)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if not 0 < fit_rate <= 1 or not noise >= 0:
        raise ValueError(f"fit rate must be in (0, 1] and noise >= 0, got {fit_rate} and {noise}")
    if until_fixation and (lam > 0 or workflow != "replace"):
        raise ValueError("until fixation needs fresh fraction 0 and the replace workflow (otherwise no outcome is lost)")
    theta = np.tile(h if theta0 is None else check_distribution(theta0, "theta0"), (seeds, 1))
    pool = samples * theta
    m = int(round(lam * samples))
    alive = np.arange(seeds)  # with until_fixation: the seeds not yet fixed
    fixation = np.full(seeds, -1)
    traj = [theta.copy()] if not until_fixation else None
    for g in range(1, generations):
        data = rng.multinomial(samples - m, tau(theta, temperature)).astype(float) if samples > m else 0.0
        if m:
            data = data + rng.multinomial(m, h, size=len(theta))
        if workflow == "replace":
            freq = data / samples
        else:
            pool = pool + data
            freq = pool / pool.sum(axis=1, keepdims=True)
            if workflow == "accumulate-subsample":
                freq = rng.multinomial(samples, freq) / samples
        theta = (1 - fit_rate) * theta + fit_rate * freq
        if noise > 0:
            on = theta > 0
            eps = rng.standard_normal(theta.shape) * on
            eps -= on * eps.sum(axis=1, keepdims=True) / on.sum(axis=1, keepdims=True)
            theta = np.clip(theta + noise * eps, 0, None)
            theta /= theta.sum(axis=1, keepdims=True)
        if until_fixation:
            fixed = theta.max(axis=1) >= 1 - 1e-12
            fixation[alive[fixed]] = g
            alive, theta = alive[~fixed], theta[~fixed]
            if alive.size == 0:
                break
        else:
            traj.append(theta.copy())
    return {"fixation": fixation} if until_fixation else {"theta": np.stack(traj)}
