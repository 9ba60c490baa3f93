"""The text of the samples: word and character statistics of generated documents (no model, no torch).

Every measure is taken on a fixed character budget (`take_char_budget`, `loop.measure_chars`), and self-BLEU on a
fixed number of documents (`loop.bleu_docs`), so that figures compare across generations; `sample_metrics` is the
one entry point the loop calls and returns the `samples/…` keys registered below. Words are `re.findall(r"[a-z0-9']+", text.lower())` (`words`). `zipf_figure` draws the
rank-frequency plot shown in TensorBoard.

Test: `python -m pytest tests/test_metrics.py`
"""
from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from training.measures.registry import register

WORD_RE = re.compile(r"[a-z0-9']+")
TAIL_MAX_COUNT = 5  # a real train word type with count <= this is in the "tail"

for _n in range(1, 5):
    register(f"samples/distinct_{_n}", "ratio", f"unique word {_n}-grams / word {_n}-grams in the sample budget",
             main=3 if _n == 2 else 0, diversity=_n == 2)
register("samples/unique_words", "types", "distinct word types in the sample budget")
register("samples/word_entropy", "bits/word", "entropy of the sampled word-unigram distribution", main=4,
         diversity=True)
register("samples/char_entropy", "bits/char", "entropy of the sampled character distribution")
register("samples/compression_ratio", "ratio", "raw / zlib-compressed bytes of the samples (higher = more repetitive)")
register("samples/zipf_exponent", "slope", "minus the log-log rank-frequency slope of the top 100 sampled words")
register("samples/self_bleu4", "ratio", "mean BLEU-4 of each of the first loop.bleu_docs sampled documents (>= 4 "
         "words) against the others")
register("samples/novel_word_rate", "ratio", "share of sampled word tokens absent from the real train vocabulary")
register("samples/vocab_coverage", "ratio", "share of the real val word types that appear in the samples")
register("samples/tail_coverage", "ratio", "share of the rare real train word types (count <= 5) that appear")
register("samples/kl_words", "bits", "KL(real || samples) of word unigrams, add-0.5 smoothing")
register("samples/js_words", "bits", "Jensen-Shannon divergence of real and sampled word unigrams")
register("samples/mean_doc_chars", "chars", "mean length of a sampled document")


def words(text: str) -> list[str]:
    """Word tokens of a text, lower-cased (the project-wide definition of a word)."""
    return WORD_RE.findall(text.lower())


def budget_with_cut(docs: list[str], n_chars: int) -> tuple[list[str], bool]:
    """`take_char_budget` plus whether the last kept document was truncated."""
    if n_chars < 0:
        raise ValueError(f"character budget must be >= 0, got {n_chars}")
    out: list[str] = []
    left = n_chars
    for doc in docs:
        if left <= 0:
            break
        cost = len(doc) + 1  # the document plus its separator (EOT counts 1 character)
        if cost <= left:
            out.append(doc)
            left -= cost
        else:
            out.append(doc[: left - 1])
            return out, True
    return out, False


def take_char_budget(docs: list[str], n_chars: int) -> list[str]:
    """Documents in order until `n_chars` characters are used, each costing len(doc) + 1 (its separator).

    The last document is truncated so that the total cost is exactly `n_chars`; when all documents together
    cost less, all are returned (the caller should sample enough text).
    """
    return budget_with_cut(docs, n_chars)[0]


def distinct_ns(doc_words: list[list[str]], max_n: int = 4) -> dict[int, float]:
    """distinct-n for n = 1..max_n: unique word n-grams / total word n-grams (a ratio in [0, 1]).

    n-grams never cross document boundaries; 0.0 when there is no n-gram. Each n-gram is coded as one int64:
    code_n[i] = rank(code_{n-1}[i]) * V + id[i+n-1], so no Python tuple is built per n-gram.
    """
    vocab: dict[str, int] = {}
    ids_per_doc = [[vocab.setdefault(w, len(vocab)) for w in ws] for ws in doc_words]
    lengths = np.array([len(x) for x in ids_per_doc], dtype=np.int64)
    ids = np.fromiter((i for x in ids_per_doc for i in x), dtype=np.int64, count=int(lengths.sum()))
    doc = np.repeat(np.arange(len(lengths)), lengths)  # (N,) document index of each token
    n_tok, v = len(ids), max(len(vocab), 1)
    out = {n: 0.0 for n in range(1, max_n + 1)}
    if n_tok == 0:
        return out
    codes = ids
    out[1] = len(np.unique(ids)) / n_tok
    for n in range(2, max_n + 1):
        if n_tok < n:
            break
        key = codes[: n_tok - n + 1] * v + ids[n - 1:]  # (N-n+1,) code of the n-gram starting at i; < N*V
        inside = doc[: n_tok - n + 1] == doc[n - 1:]  # the n-gram lies within one document
        total = int(inside.sum())
        out[n] = len(np.unique(key[inside])) / total if total else 0.0
        codes = np.unique(key, return_inverse=True)[1].astype(np.int64)  # re-rank so codes stay < N
    return out


def entropy_bits(counts: Iterable[int]) -> float:
    """Entropy in bits of the empirical distribution given by `counts`; 0 for an empty one."""
    c = np.fromiter(counts, dtype=np.float64)
    c = c[c > 0]
    if c.size == 0:
        return 0.0
    p = c / c.sum()
    return float(-(p * np.log2(p)).sum())


def word_entropy(word_counts: Counter) -> float:
    """Entropy in bits of the empirical word-unigram distribution (bits per word)."""
    return entropy_bits(word_counts.values())


def char_entropy(docs: list[str]) -> float:
    """Entropy in bits of the empirical character distribution of the documents (separators not counted)."""
    return entropy_bits(Counter("".join(docs)).values())


def compression_ratio(docs: list[str]) -> float:
    """Raw UTF-8 bytes / zlib level-9 bytes of the documents joined with "\\n\\n" (ratio; higher = more
    repetitive). NaN for empty text."""
    raw = "\n\n".join(docs).encode("utf-8")
    if not raw:
        return math.nan
    return len(raw) / len(zlib.compress(raw, 9))


def zipf_exponent(word_counts: Counter, top: int = 100) -> float:
    """Zipf exponent s (positive): minus the least-squares slope of ln(frequency) on ln(rank) over the
    `top` most frequent word types (fewer if fewer types). Dimensionless; NaN with fewer than 2 types."""
    freqs = np.array(sorted(word_counts.values(), reverse=True)[:top], dtype=np.float64)
    if freqs.size < 2:
        return math.nan
    ranks = np.arange(1, freqs.size + 1, dtype=np.float64)
    slope = np.polyfit(np.log(ranks), np.log(freqs), 1)[0]
    return float(-slope)


SELF_BLEU_MAX_N = 4  # BLEU-4: word 1..4-grams, uniform weights 1/4
SELF_BLEU_MIN_WORDS = 4  # shorter documents hold no 4-gram: they are neither hypotheses nor references


def _ngram_counts(ws: list[str], n: int) -> Counter:
    """Counts of the word n-grams (tuples) of one document."""
    return Counter(zip(*(ws[k:] for k in range(n))))


def _closest_ref_lengths(lengths: np.ndarray) -> np.ndarray:
    """For each document i, the length of the closest OTHER document (ties: the shorter one), (M,)."""
    m = len(lengths)
    big = int(lengths.max()) + 1
    diff = np.abs(lengths[:, None] - lengths[None, :])  # (M, M) word-length gaps
    key = diff * big + lengths[None, :]  # closest first, then shorter: a lexicographic key in one int
    key[np.arange(m), np.arange(m)] = np.iinfo(np.int64).max  # never itself
    return lengths[key.argmin(axis=1)]


def self_bleu4(doc_words: list[list[str]], n_docs: int) -> float:
    """Self-BLEU-4 of the first `n_docs` documents of at least 4 words (a ratio in [0, 1]; higher = documents repeat
    each other); NaN when fewer than `n_docs` such documents are given.

    Self-BLEU grows with the number of references (issue 14 measured 0.608, 0.614, 0.637, 0.688 for 25, 50, 100,
    200 documents of one fixed distribution), so it is only comparable across generations on a fixed number of
    documents: the loop samples until there are `loop.bleu_docs`. Each document is scored as the hypothesis
    against ALL the other documents as references (never itself) and the scores are averaged:

        BLEU = BP * exp(mean_{n=1..4} ln p_n),   BP = 1 if c > r else exp(1 - r / c),

    with c the hypothesis length in words, r the length of the closest reference (ties: the shorter), and
    p_n the modified n-gram precision: sum over the hypothesis n-grams of min(count, max count in any one
    reference) / number of hypothesis n-grams. Smoothing (Lin & Och 2004, "BLEU+1"): for n >= 2 one is added
    to both numerator and denominator, so a short text without a shared 4-gram does not score 0; p_1 is not
    smoothed, so a hypothesis sharing no word with the references scores exactly 0.

    Speed: n-gram counters are built once per document. The max count over "all references but i" is the max
    over all documents unless document i alone holds that max, in which case it is the second-highest count;
    one pass keeps (max, unique holder or -1 on a tie, second max) per n-gram. Cost O(M · words), not O(M²).
    """
    if n_docs < 2:
        raise ValueError(f"self-BLEU needs n_docs >= 2, got {n_docs}")
    docs = [ws for ws in doc_words if len(ws) >= SELF_BLEU_MIN_WORDS][:n_docs]
    if len(docs) < n_docs:
        return math.nan
    m = len(docs)
    log_p = np.zeros(m)  # (M,) sum over n of ln p_n per hypothesis
    dead = np.zeros(m, dtype=bool)  # no unigram match: BLEU exactly 0
    for n in range(1, SELF_BLEU_MAX_N + 1):
        counts = [_ngram_counts(ws, n) for ws in docs]
        top: dict[tuple, list] = {}  # n-gram -> [max count, unique holder (-1 on a tie), second max count]
        for i, cs in enumerate(counts):
            for g, c in cs.items():
                t = top.get(g)
                if t is None:
                    top[g] = [c, i, 0]
                elif c > t[0]:
                    t[2], t[0], t[1] = t[0], c, i
                elif c == t[0]:
                    t[2], t[1] = c, -1
                elif c > t[2]:
                    t[2] = c
        for i, cs in enumerate(counts):
            hit = 0
            for g, c in cs.items():
                best, holder, second = top[g]
                hit += min(c, second if holder == i else best)
            total = len(docs[i]) - n + 1  # >= 1 since every kept document has >= 4 words
            if n == 1:
                if hit == 0:
                    dead[i] = True
                    continue
                log_p[i] += math.log(hit / total)
            else:
                log_p[i] += math.log((hit + 1) / (total + 1))
    lengths = np.array([len(ws) for ws in docs], dtype=np.int64)
    ref = _closest_ref_lengths(lengths)
    bp = np.where(lengths > ref, 1.0, np.exp(1.0 - ref / lengths))
    bleu = np.where(dead, 0.0, bp * np.exp(log_p / SELF_BLEU_MAX_N))
    return float(bleu.mean())


@dataclass(frozen=True)
class RealStats:
    """Word statistics of the real corpus, built once per run: train word counts, val word types, and the
    tail (train word types with count <= TAIL_MAX_COUNT)."""

    train_counts: Counter
    val_types: frozenset
    tail_types: frozenset

    @classmethod
    def from_docs(cls, train_docs: list[str], val_docs: list[str]) -> "RealStats":
        # One findall over the joined text: "\n" is not a word character, so no word crosses documents.
        train_counts = Counter(words("\n".join(train_docs)))
        val_types = frozenset(words("\n".join(val_docs)))
        tail = frozenset(w for w, c in train_counts.items() if c <= TAIL_MAX_COUNT)
        return cls(train_counts, val_types, tail)


def novel_word_rate(gen_counts: Counter, real: RealStats) -> float:
    """Share of generated word tokens (not types) absent from the real train vocabulary, in [0, 1]."""
    total = sum(gen_counts.values())
    if total == 0:
        return math.nan
    novel = sum(c for w, c in gen_counts.items() if w not in real.train_counts)
    return novel / total


def _type_coverage(gen_types: set, target: frozenset) -> float:
    return len(target & gen_types) / len(target) if target else math.nan


def vocab_coverage(gen_types: set, real: RealStats) -> float:
    """Share of the real val word types that appear in the samples, in [0, 1]."""
    return _type_coverage(gen_types, real.val_types)


def tail_coverage(gen_types: set, real: RealStats) -> float:
    """Share of the real train tail word types (count <= 5 in train) that appear in the samples, in [0, 1]."""
    return _type_coverage(gen_types, real.tail_types)


def _aligned(p: Counter, q: Counter) -> tuple[np.ndarray, np.ndarray]:
    """Count vectors of two counters over their union vocabulary, (U,) each, in sorted word order: a set's order
    changes with each process's string-hash seed, and float sums must not (a run is reproducible from its seed)."""
    keys = sorted(p.keys() | q.keys())
    return (np.array([p.get(k, 0) for k in keys], dtype=np.float64),
            np.array([q.get(k, 0) for k in keys], dtype=np.float64))


def kl_words(real_counts: Counter, gen_counts: Counter, alpha: float = 0.5) -> float:
    """KL(real ‖ generated) of the word-unigram distributions, in bits.

    Smoothing (add-0.5, Jeffreys-style): over the union vocabulary U of both counters, each distribution is
    p_i = (c_i + 0.5) / (N + 0.5 |U|), applied to BOTH real and generated counts, so the KL is finite even
    when the samples miss real words.
    """
    p, q = _aligned(real_counts, gen_counts)
    if p.size == 0:
        return math.nan
    p = (p + alpha) / (p.sum() + alpha * p.size)
    q = (q + alpha) / (q.sum() + alpha * q.size)
    return float((p * np.log2(p / q)).sum())


def js_words(real_counts: Counter, gen_counts: Counter) -> float:
    """Jensen–Shannon divergence of the word-unigram distributions, in bits, unsmoothed: in [0, 1]
    (0 for identical distributions, 1 for disjoint supports)."""
    p, q = _aligned(real_counts, gen_counts)
    if p.sum() == 0 or q.sum() == 0:
        return math.nan
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0  # 0 log 0 = 0; m > 0 wherever a > 0
        return float((a[nz] * np.log2(a[nz] / m[nz])).sum())

    return 0.5 * kl(p) + 0.5 * kl(q)


def sample_metrics(docs: list[str], n_chars: int, real: RealStats | None = None, bleu_docs: int = 100
                   ) -> dict[str, float]:
    """All sample-only measures of one generation's documents on a budget of `n_chars` characters.

    Keys: `samples/distinct_1..4`, `unique_words`, `word_entropy`, `char_entropy`, `mean_doc_chars` (over all
    given documents, before the budget cut), `compression_ratio`, `zipf_exponent`; with `real` also
    `samples/novel_word_rate`, `vocab_coverage`, `tail_coverage`, `kl_words`, `js_words`. Keys needing an absent
    input are left out, not NaN.
    `samples/self_bleu4` is taken on the first `bleu_docs` whole documents of at least 4 words (not the budget):
    NaN when there are fewer.
    """
    mean_doc_chars = float(np.mean([len(d) for d in docs])) if docs else math.nan
    kept = take_char_budget(docs, n_chars)
    doc_words = [words(d) for d in kept]
    counts: Counter = Counter()
    for ws in doc_words:
        counts.update(ws)
    out = {f"samples/distinct_{n}": v for n, v in distinct_ns(doc_words, 4).items()}
    out.update({
        "samples/unique_words": float(len(counts)),
        "samples/word_entropy": word_entropy(counts),
        "samples/char_entropy": char_entropy(kept),
        "samples/mean_doc_chars": mean_doc_chars,
        "samples/compression_ratio": compression_ratio(kept),
        "samples/zipf_exponent": zipf_exponent(counts),
        "samples/self_bleu4": self_bleu4([words(d) for d in docs], bleu_docs),
    })
    if real is not None:
        types = set(counts)
        out.update({
            "samples/novel_word_rate": novel_word_rate(counts, real),
            "samples/vocab_coverage": vocab_coverage(types, real),
            "samples/tail_coverage": tail_coverage(types, real),
            "samples/kl_words": kl_words(real.train_counts, counts),
            "samples/js_words": js_words(real.train_counts, counts),
        })
    return out


def zipf_figure(docs: list[str], n_chars: int, real_counts: Counter, title: str, top: int = 1000):
    """Rank-frequency plot (log-log) of sampled words vs the real train corpus, relative frequencies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sample_counts = Counter(w for d in take_char_budget(docs, n_chars) for w in words(d))
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=90)
    for counts, label, style in ((real_counts, "real train", "-"), (sample_counts, "samples", ".")):
        freq = np.array(sorted(counts.values(), reverse=True)[:top], dtype=np.float64)
        if len(freq):
            ax.loglog(np.arange(1, len(freq) + 1), freq / sum(counts.values()), style, label=label, ms=3)
    ax.set_xlabel("rank")
    ax.set_ylabel("relative frequency")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
