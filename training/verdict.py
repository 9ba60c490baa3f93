"""A verdict per closed-loop run: collapse, heat death, drift, stable or undetermined, from the per-generation
metric records (the dicts of metrics.jsonl).

Run inside the loop (`verdict_so_far(records)` after every generation) or on a finished run:
    `python -c "from training.records import read_metrics; from training.verdict import verdict; \
print(verdict(read_metrics('runs/NAME/metrics.jsonl')))"`
Test: `/tmp/probe-venv/bin/python -m pytest tests/test_verdict.py -q`

The rule (constants below, all per generation unless said):
  Trend of one indicator y over generations g (records whose value is None or not finite are skipped; at least
  MIN_POINTS values are needed, else the indicator is "unknown"):
    - b = least-squares slope of y on g (units of y per generation), s_b = its standard error from the
      residuals, sqrt(SSR / (n - 2) / Σ(g - ḡ)²);
    - scale = max(|y_0|, MIN_SCALE): the first value, but at least 0.1 in the indicator's units (bits or a
      rate), so an indicator starting at 0 does not turn every wiggle into a trend;
    - noise = max(s_b, FLOOR_PER_GEN · scale): the residual noise, or a minimum effect of 1% of the scale per
      generation, whichever is larger;
    - the trend is "beyond noise" (rising +1 / falling -1, else flat 0) when |b| > NOISE_MULT · noise (2 noise
      levels) AND |y_last − y_0| > MIN_CHANGE · scale (5%) AND y_last − y_0 has the sign of b.
  Verdict, in this order (E = val/entropy, B = val/bpc):
    1. fewer than MIN_GENERATIONS (3) records, or neither E nor B known        -> undetermined
    2. E falling, a diversity measure (samples/word_entropy or samples/distinct_2) falling and none rising
                                                                                -> collapse
    3. E rising and (samples/novel_word_rate rising, or, given `uniform_bits` = log2(vocab size), the gap
       uniform_bits − E shrunk by at least UNIFORM_GAP_SHRINK (25%) of its generation-0 value)  -> heat death
    4. B rising (E flat, or E moving without the sample measures agreeing)      -> drift
    5. E flat, B not rising, no sample measure beyond noise                     -> stable
       (B falling is allowed: the model still learns the real data, e.g. with fresh data mixed in)
    6. anything else (E moves but the sample measures disagree, or only sample measures move) -> undetermined

Worked example (a real T = 1.0 run, pure replace): val/entropy 2.871 2.929 2.938 2.941 2.951 is flat
(b = 0.017 bits/gen < 2 · 0.029), but val/bpc 2.885 2.956 3.024 3.097 3.133 rises 8.6% with b = 0.064 bits/char
per generation > 2 · 0.029 (noise = the 1% floor; s_b = 0.004): the verdict is DRIFT, not stable. This is
deliberate: at T = 1 there is no push toward either limit, yet the model forgets the real distribution a little
more every generation (finite-sample drift), which is what "drift" names.
"""
from __future__ import annotations

import math

import numpy as np

MIN_GENERATIONS = 3  # records needed before any verdict
MIN_POINTS = 3  # finite values an indicator needs for a slope and its standard error (n - 2 >= 1)
MIN_SCALE = 0.1  # smallest scale of an indicator, in its own units (bits, or a rate in [0, 1])
FLOOR_PER_GEN = 0.01  # minimum effect: 1% of the scale per generation
NOISE_MULT = 2.0  # a slope must exceed this many noise levels
MIN_CHANGE = 0.05  # and the first-to-last change must exceed 5% of the scale
UNIFORM_GAP_SHRINK = 0.25  # heat death via the uniform limit: the gap to log2(V) shrank by >= 25%

ENTROPY, BPC = "val/entropy", "val/bpc"
DIVERSITY = ("samples/word_entropy", "samples/distinct_2")
NOVEL = "samples/novel_word_rate"
INDICATORS = (ENTROPY, BPC, *DIVERSITY, NOVEL)
RULE = ("beyond noise: |slope| > 2·max(se, 1%·scale)/gen and |last−first| > 5%·scale; collapse: val/entropy "
        "and sample diversity fall; heat death: val/entropy rises with novel words or toward log2(V); drift: "
        "val/bpc rises otherwise; stable: nothing beyond noise")


def trend(gens: np.ndarray, ys: np.ndarray) -> dict:
    """Slope, its standard error, noise level and direction (+1, -1, 0) of one series; see the module rule.

    `gens`, `ys`: (n,) float arrays, already finite. Returns {"slope", "se", "noise", "change", "dir"} with
    slope and noise in the series' units per generation; all None and dir 0 with fewer than MIN_POINTS values
    or fewer than two distinct generations.
    """
    if len(ys) < MIN_POINTS or np.ptp(gens) == 0:
        return {"slope": None, "se": None, "noise": None, "change": None, "dir": 0}
    g0 = gens - gens.mean()
    sxx = float((g0 ** 2).sum())
    b = float((g0 * (ys - ys.mean())).sum() / sxx)
    resid = ys - (ys.mean() + b * g0)
    se = math.sqrt(float((resid ** 2).sum()) / (len(ys) - 2) / sxx)
    scale = max(abs(float(ys[0])), MIN_SCALE)
    noise = max(se, FLOOR_PER_GEN * scale)
    change = float(ys[-1] - ys[0])
    beyond = abs(b) > NOISE_MULT * noise and abs(change) > MIN_CHANGE * scale and change * b > 0
    return {"slope": b, "se": se, "noise": noise, "change": change, "dir": int(np.sign(b)) if beyond else 0}


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


def verdict(records: list[dict], uniform_bits: float | None = None) -> dict:
    """The verdict of a run from its per-generation records (oldest first); see the module docstring.

    `uniform_bits`: log2 of the vocabulary size (bits), the entropy of the uniform next-token law, if known.
    Returns {"verdict", "slopes", "noise", "rule", "reason", "generations"}; slopes and noise per indicator
    in its units per generation (None when unknown).
    """
    if uniform_bits is not None and not uniform_bits > 0:
        raise ValueError(f"uniform_bits must be > 0 (log2 of the vocabulary size), got {uniform_bits}")
    t = {k: trend(*_series(records, k)) for k in INDICATORS}
    out = {"slopes": {k: v["slope"] for k, v in t.items()}, "noise": {k: v["noise"] for k, v in t.items()},
           "rule": RULE, "generations": len(records)}

    def done(name: str, reason: str) -> dict:
        return {"verdict": name, **out, "reason": reason}

    e, b = t[ENTROPY], t[BPC]
    if len(records) < MIN_GENERATIONS:
        return done("undetermined", f"only {len(records)} generation(s); {MIN_GENERATIONS} are needed")
    if e["slope"] is None and b["slope"] is None:
        return done("undetermined", f"fewer than {MIN_POINTS} known values of {ENTROPY} and of {BPC}")
    div = {k: t[k]["dir"] for k in DIVERSITY if t[k]["slope"] is not None}
    moving = [k for k in (*DIVERSITY, NOVEL) if t[k]["dir"] != 0]
    disagree = ""
    if e["dir"] < 0:
        if -1 in div.values() and 1 not in div.values():
            falling = " and ".join(k for k, d in div.items() if d < 0)
            return done("collapse", f"{ENTROPY} falls {e['change']:+.3g} bits and {falling} falls with it: "
                                    "the model narrows onto its own samples")
        disagree = (f"{ENTROPY} falls but sample diversity does not "
                    f"({', '.join(f'{k} {_word(d)}' for k, d in div.items()) or 'not measured'})")
    if e["dir"] > 0:
        ys = _series(records, ENTROPY)[1]
        toward = (uniform_bits is not None and uniform_bits > ys[0]
                  and uniform_bits - ys[-1] <= (1 - UNIFORM_GAP_SHRINK) * (uniform_bits - ys[0]))
        if t[NOVEL]["dir"] > 0 or toward:
            why = f"{NOVEL} rises" if t[NOVEL]["dir"] > 0 else f"it nears the uniform {uniform_bits:.3g} bits"
            return done("heat death", f"{ENTROPY} rises {e['change']:+.3g} bits and {why}: "
                                      "the model spreads toward uniform")
        disagree = f"{ENTROPY} rises but neither {NOVEL} rises nor the gap to uniform shrinks enough"
    if b["dir"] > 0:
        lead = disagree + "; " if disagree else f"{ENTROPY} is flat; "
        return done("drift", f"{lead}{BPC} rises {b['change']:+.3g} bits/char: the model forgets the real "
                             "distribution without a direction")
    if disagree:
        return done("undetermined", disagree)
    if moving:
        return done("undetermined", f"{ENTROPY} and {BPC} are flat but {', '.join(moving)} move beyond noise")
    if e["slope"] is None:
        return done("undetermined", f"{BPC} is not rising but {ENTROPY} is unknown")
    learning = f"; {BPC} falls (still learning)" if b["dir"] < 0 else ""
    return done("stable", f"no indicator moves beyond noise over {len(records)} generations{learning}")


def _word(d: int) -> str:
    return {1: "rising", -1: "falling", 0: "flat"}[d]


def verdict_so_far(records: list[dict], generation: int | None = None, uniform_bits: float | None = None
                   ) -> dict:
    """`verdict` on the prefix of records up to and including `generation` (all records when None): what the
    loop reports after each generation."""
    if generation is not None:
        records = [r for i, r in enumerate(records) if r.get("generation", i) <= generation]
    return verdict(records, uniform_bits=uniform_bits)
