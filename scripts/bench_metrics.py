"""Benchmark (not a test) of the sample-side measures on ~1 MB of generated-like text, on one CPU thread.

Text comes from the built-in synthetic language (`data.synthetic`) in three variants: as sampled (~100 characters
per document), with 30% of the words perturbed into novel (out-of-vocabulary) words, as a hot model would write,
and with 50 documents joined into one (~5 KB documents, as a model that rarely emits EOT writes; the 200
self-BLEU documents then hold ~20% of the text). `RealStats` come from a
separate sample. Each measure group is timed `--repeats` times; the table shows the median seconds.

Run from the repository root: `PYTHONPATH=. python scripts/bench_metrics.py [--chars N] [--repeats R]`
(or plain `python scripts/bench_metrics.py` with the package installed).
"""
import os

os.environ["OMP_NUM_THREADS"] = "1"  # before numpy/torch load their thread pools
os.environ["MKL_NUM_THREADS"] = "1"
os.environ["OPENBLAS_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

import numpy as np  # noqa: E402

from data.synthetic import SyntheticConfig, SyntheticLanguage  # noqa: E402
from training.measures import sample_text as M  # noqa: E402
from training.measures import truth  # noqa: E402

NOVEL_SHARE = 0.3  # share of words turned into novel words in the perturbed variant
LONG_JOIN = 50  # documents joined into one in the long-document variant (~5 KB each: self-BLEU's worst case)


def perturb(docs: list[str], share: float, rng: np.random.Generator) -> list[str]:
    """Each word is, with probability `share`, given a random letter appended and one letter changed, so it is
    (almost surely) outside the language's vocabulary; spacing and punctuation are kept."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    out = []
    for d in docs:
        toks = d.split(" ")
        hit = rng.random(len(toks)) < share
        for i in np.flatnonzero(hit):
            t = toks[i]
            end = "." if t.endswith(".") else ""
            w = t[:-1] if end else t
            j = int(rng.integers(len(w)))
            toks[i] = w[:j] + str(rng.choice(letters)) + w[j + 1:] + str(rng.choice(letters)) + end
        out.append(" ".join(toks))
    return out


def timed(fn, repeats: int) -> float:
    """Median wall-clock seconds of `repeats` calls of fn()."""
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chars", type=int, default=1_000_000, help="characters of generated text to measure")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per group (median reported)")
    args = ap.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # the measures themselves need no torch
        pass
    lang = SyntheticLanguage(SyntheticConfig())
    real_docs = lang.sample_chars(args.chars, np.random.default_rng(1))
    n_val = max(1, len(real_docs) // 10)
    real = M.RealStats.from_docs(real_docs[n_val:], real_docs[:n_val])
    clean = lang.sample_chars(args.chars, np.random.default_rng(0))
    long = [" ".join(clean[i:i + LONG_JOIN]) for i in range(0, len(clean), LONG_JOIN)]
    variants = {"as sampled": clean,
                f"{NOVEL_SHARE:.0%} novel words": perturb(clean, NOVEL_SHARE, np.random.default_rng(2)),
                f"long docs ({LONG_JOIN} joined)": long}
    print(f"{args.chars:,} characters, {args.repeats} repeats, 1 thread; median seconds\n")
    print("| measure group | " + " | ".join(variants) + " |")
    print("|---|" + "---:|" * len(variants))
    rows: dict[str, list[str]] = {}
    for docs in variants.values():
        kept, truncated = M.budget_with_cut(docs, args.chars)
        doc_words = [M.words(d) for d in kept]
        counts = Counter(w for ws in doc_words for w in ws)
        groups = {
            "all sample-text measures (`sample_metrics`, real stats)":
                lambda: M.sample_metrics(docs, args.chars, real),
            "without real stats": lambda: M.sample_metrics(docs, args.chars),
            "words (tokenize the budget)": lambda: [M.words(d) for d in kept],
            "distinct_1..4": lambda: M.distinct_ns(doc_words, 4),
            "self_bleu4 alone (100 docs)": lambda: M.self_bleu4([M.words(d) for d in docs], 100),
            "real-corpus measures (novel, coverage, kl, js)":
                lambda: (M.novel_word_rate(counts, real), M.vocab_coverage(set(counts), real),
                         M.tail_coverage(set(counts), real), M.kl_words(real.train_counts, counts),
                         M.js_words(real.train_counts, counts)),
            "truth measures alone (`truth_metrics`)":
                lambda: truth.truth_metrics(kept, [True] * (len(kept) - truncated) + [False] * truncated, counts,
                                           lang),
        }
        for name, fn in groups.items():
            rows.setdefault(name, []).append(f"{timed(fn, args.repeats):.3f}")
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
