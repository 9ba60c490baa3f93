"""Sample-only measures against values worked out by hand on tiny texts.

Run: `python -m pytest tests/test_metrics.py -q`
"""
import math
from collections import Counter

import numpy as np
import pytest

from training.measures import sample_text as M
from training.measures import truth


def test_char_budget_is_exact_and_ordered():
    docs = ["abc", "de", "fghij"]
    # costs 4 + 3 = 7; budget 9 leaves 2 -> "f" (1 char + separator)
    assert M.take_char_budget(docs, 9) == ["abc", "de", "f"]
    assert M.take_char_budget(docs, 7) == ["abc", "de"]
    assert M.take_char_budget(docs, 100) == docs
    assert M.take_char_budget(docs, 0) == []
    for n in range(1, 14):
        kept = M.take_char_budget(docs, n)
        assert sum(len(d) + 1 for d in kept) == n
    with pytest.raises(ValueError):
        M.take_char_budget(docs, -1)


def test_distinct_n_by_hand():
    docs = [["a", "b", "a", "b"], ["a", "b", "a", "b"]]
    d = M.distinct_ns(docs, 4)
    assert d[1] == pytest.approx(2 / 8)
    assert d[2] == pytest.approx(2 / 6)  # ab, ba, ab per doc; unique {ab, ba}
    assert d[3] == pytest.approx(2 / 4)  # aba, bab per doc
    assert d[4] == pytest.approx(1 / 2)  # abab per doc
    # n-grams never cross documents: "x" | "y" has no bigram
    assert M.distinct_ns([["x"], ["y"]], 2)[2] == 0.0
    assert M.distinct_ns([["x", "y"], ["y", "x"]], 2)[2] == 1.0
    assert M.distinct_ns([], 4) == {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0}


def test_entropies_of_known_distributions():
    assert M.word_entropy(Counter({"a": 1, "b": 1, "c": 1, "d": 1})) == pytest.approx(2.0)
    assert M.word_entropy(Counter({"a": 7})) == 0.0
    # p = (1/2, 1/4, 1/4) -> 1.5 bits
    assert M.word_entropy(Counter({"a": 2, "b": 1, "c": 1})) == pytest.approx(1.5)
    assert M.char_entropy(["ab", "ab"]) == pytest.approx(1.0)  # separators not counted
    assert M.char_entropy(["aaaa"]) == 0.0


def test_compression_ratio_orders_repetitive_above_random():
    rng = np.random.default_rng(0)
    rep = ["the cat sat " * 50] * 4
    rand = ["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz "), 600)) for _ in range(4)]
    r_rep, r_rand = M.compression_ratio(rep), M.compression_ratio(rand)
    assert r_rep > 10 * r_rand
    assert 1.0 < r_rand < 2.0  # 27 symbols ~ 4.75 bits of 8: compresses less than 2x
    assert math.isnan(M.compression_ratio([]))


def test_zipf_exponent_recovers_power_law():
    counts = Counter({f"w{r}": int(round(1e6 / r ** 1.3)) for r in range(1, 200)})
    assert M.zipf_exponent(counts) == pytest.approx(1.3, abs=1e-3)
    assert math.isnan(M.zipf_exponent(Counter({"a": 3})))


@pytest.fixture
def real():
    # train counts: a 6, b 2, c 1  -> tail {b, c}; val types {a, d}
    return M.RealStats.from_docs(["a a a b", "a A a c b"], ["a d", "D"])


def test_real_stats(real):
    assert real.train_counts == Counter({"a": 6, "b": 2, "c": 1})
    assert real.val_types == {"a", "d"}
    assert real.tail_types == {"b", "c"}


def test_coverage_and_novel_rate(real):
    gen = Counter({"a": 2, "b": 1, "z": 1})
    assert M.novel_word_rate(gen, real) == pytest.approx(1 / 4)
    assert M.vocab_coverage(set(gen), real) == pytest.approx(1 / 2)
    assert M.tail_coverage(set(gen), real) == pytest.approx(1 / 2)


def test_kl_smoothing_by_hand():
    p, q = Counter({"a": 3, "b": 1}), Counter({"a": 1, "c": 1})
    # union {a, b, c}; add 0.5: p = (3.5, 1.5, 0.5)/5.5, q = (1.5, 0.5, 1.5)/3.5
    ps, qs = np.array([3.5, 1.5, 0.5]) / 5.5, np.array([1.5, 0.5, 1.5]) / 3.5
    assert M.kl_words(p, q) == pytest.approx(float((ps * np.log2(ps / qs)).sum()))
    assert M.kl_words(p, p) == pytest.approx(0.0, abs=1e-12)
    assert M.kl_words(p, q) > 0


def test_js_bounds():
    p = Counter({"a": 3, "b": 1})
    assert M.js_words(p, Counter({"a": 6, "b": 2})) == pytest.approx(0.0, abs=1e-12)
    assert M.js_words(p, Counter({"x": 5})) == pytest.approx(1.0)
    # p = (1, 0), q = (1/2, 1/2): m = (3/4, 1/4); JS = 0.5 log2(4/3) + 0.5 (0.5 log2(2/3) + 0.5 log2 2)
    by_hand = 0.5 * math.log2(4 / 3) + 0.5 * (0.5 * math.log2(2 / 3) + 0.5)
    assert M.js_words(Counter({"a": 1}), Counter({"a": 1, "b": 1})) == pytest.approx(by_hand)


def test_sample_metrics_extremes_and_keys(real):
    rng = np.random.default_rng(1)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    many = [" ".join("".join(rng.choice(letters, 8)) for _ in range(50)) for _ in range(20)]
    one = ["hello hello hello hello hello"] * 40
    m_many, m_one = M.sample_metrics(many, 5000, bleu_docs=20), M.sample_metrics(one, 5000, bleu_docs=20)
    assert m_many["samples/distinct_1"] > 0.99 and m_one["samples/distinct_1"] < 0.01
    assert m_one["samples/word_entropy"] == 0.0 and m_one["samples/unique_words"] == 1.0
    assert m_one["samples/compression_ratio"] > m_many["samples/compression_ratio"]
    assert m_one["samples/mean_doc_chars"] == len(one[0])
    assert set(m_many) == {f"samples/distinct_{n}" for n in range(1, 5)} | {
        "samples/unique_words", "samples/word_entropy", "samples/char_entropy", "samples/mean_doc_chars",
        "samples/compression_ratio", "samples/zipf_exponent", "samples/self_bleu4"}
    assert m_one["samples/self_bleu4"] == pytest.approx(1.0)  # 20 of 40 identical documents
    assert m_many["samples/self_bleu4"] < 0.05  # random 8-letter words: no shared word, at most chance
    full = M.sample_metrics(["a b z"], 100, real=real)
    assert full["samples/novel_word_rate"] == pytest.approx(1 / 3)
    assert full["samples/vocab_coverage"] == pytest.approx(1 / 2)
    assert full["samples/tail_coverage"] == pytest.approx(1 / 2)
    assert 0.0 < full["samples/js_words"] < 1.0 and full["samples/kl_words"] > 0


class FakeLanguage:
    """Words 'ab' (mass 0.75) and 'c' (mass 0.25): every event with a valid word costs ln 2 nats per character;
    an unknown word is an impossible event; an ended document's end is one event of 1 character (ln 2)."""

    mass = {"ab": 0.75, "c": 0.25}

    def is_valid_word(self, w):
        return w in self.mass

    def word_set_mass(self, ws):
        return sum(self.mass.get(w, 0.0) for w in ws)

    def event_logprobs(self, doc, ended):
        ws = M.words(doc)
        if not ended:
            ws = ws[:-1]
        out = [(-math.log(2) * (len(w) + bool(i)) if w in self.mass else None, len(w) + bool(i))
               for i, w in enumerate(ws)]
        return out + ([(-math.log(2), 1)] if ended else [])


def test_truth_metrics_with_fake_language():
    docs = ["ab c", "ab xx", "c", "abab ab"]  # costs 5 + 6 + 2 = 13, last doc truncated to "ab"
    out = truth.sample_truth(docs, [True] * 4, 16, FakeLanguage())
    # budgeted words: ab c ab xx c ab -> 5 of 6 valid; types {ab, c} valid -> mass 1.0
    assert out["truth/valid_word_rate"] == pytest.approx(5 / 6)
    assert out["truth/coverage"] == pytest.approx(1.0)
    # ended docs: "ab c", "ab xx", "c" ("ab" was cut by the budget: not ended); valid: "ab c", "c"
    assert out["truth/valid_doc_rate"] == pytest.approx(2 / 3)
    # events: ab(2) c(2) end(1) | ab(2) xx(3: impossible) end(1) | c(1) end(1) | (cut: its only word dropped)
    assert out["truth/sample_bpc"] == pytest.approx(1.0)  # 1 bit per character of every possible event
    assert out["truth/invalid_char_rate"] == pytest.approx(3 / 13)
    none_valid = truth.sample_truth(["xx yy"], [False], 100, FakeLanguage())
    assert math.isnan(none_valid["truth/sample_bpc"]) and none_valid["truth/coverage"] == 0.0
    assert none_valid["truth/invalid_char_rate"] == 1.0


# --- self-BLEU-4 -------------------------------------------------------------------------------------------


def _bleu(*docs, n_docs=None):
    ws = [d.split() for d in docs]
    return M.self_bleu4(ws, n_docs or sum(len(w) >= 4 for w in ws))


def _slow_self_bleu4(doc_words):
    """Reference: BLEU+1 of each document against every other, max reference count taken reference by
    reference (O(M²)); no subsampling."""
    docs = [ws for ws in doc_words if len(ws) >= 4]
    scores = []
    for i, hyp in enumerate(docs):
        refs = [r for j, r in enumerate(docs) if j != i]
        logs = []
        for n in range(1, 5):
            h = M._ngram_counts(hyp, n)
            rc = [M._ngram_counts(r, n) for r in refs]
            hit = sum(min(c, max(r[g] for r in rc)) for g, c in h.items())
            total = len(hyp) - n + 1
            logs.append(math.log(hit / total) if n == 1 and hit else
                        -math.inf if n == 1 else math.log((hit + 1) / (total + 1)))
        r = min((abs(len(x) - len(hyp)), len(x)) for x in refs)[1]
        bp = 1.0 if len(hyp) > r else math.exp(1 - r / len(hyp))
        scores.append(bp * math.exp(sum(logs) / 4))
    return sum(scores) / len(scores)


def test_self_bleu_identical_documents_is_exactly_one():
    # p_1 = 4/4; smoothed p_n = (k + 1)/(k + 1) = 1 for n >= 2; equal lengths -> BP = 1
    assert _bleu("a b c d e", "a b c d e", "a b c d e") == pytest.approx(1.0, abs=1e-12)


def test_self_bleu_disjoint_and_shuffled_by_hand():
    # disjoint vocabularies: no unigram match, p_1 = 0 (not smoothed) -> exactly 0
    assert _bleu("a b c d", "e f g h") == 0.0
    # same words, no shared bigram: p_1 = 1, p_2 = (0+1)/(3+1), p_3 = 1/3, p_4 = 1/2; BP = 1
    # BLEU = (1 * 1/4 * 1/3 * 1/2)^(1/4) = (1/24)^(1/4) ~ 0.452 for both hypotheses
    assert _bleu("a b c d", "d c b a") == pytest.approx((1 / 24) ** 0.25)


def test_self_bleu_brevity_penalty_by_hand():
    # hyp "a b c d" vs "a b c d e f g h": all precisions (smoothed) 1, c = 4 < r = 8 -> BP = e^(1 - 2)
    # hyp "a..h" vs "a b c d": p = 4/8, 4/8, 3/7, 2/6; c > r -> BP = 1; (1/2 * 1/2 * 3/7 * 1/3)^(1/4) = (1/28)^(1/4)
    want = (math.exp(-1) + (1 / 28) ** 0.25) / 2
    assert _bleu("a b c d", "a b c d e f g h") == pytest.approx(want)


def test_self_bleu_never_compares_a_document_with_itself():
    a, b = "a b c d", "d c b a"
    x = (1 / 24) ** 0.25
    assert _bleu(a, b) == pytest.approx(x)  # each sees only the other
    # a twice: each copy of a has the other copy as reference -> 1; b sees only a's -> x
    assert _bleu(a, a, b) == pytest.approx((1 + 1 + x) / 3)
    # a document alone (or with only too-short ones) has no reference
    with pytest.raises(ValueError):
        _bleu(a)
    assert math.isnan(_bleu(a, "x y z", n_docs=2))
    assert _bleu(a, "x y z", b) == pytest.approx(x)  # < 4 words: skipped as hypothesis and reference


def test_self_bleu_top_two_shortcut_matches_brute_force():
    rng = np.random.default_rng(3)
    vocab = np.array(list("abcdef"))  # small vocabulary: many repeated n-grams, ties and unique maxima
    docs = [list(rng.choice(vocab, int(rng.integers(1, 14)))) for _ in range(25)]
    fast = M.self_bleu4(docs, sum(len(d) >= 4 for d in docs))
    assert fast == pytest.approx(_slow_self_bleu4(docs), rel=1e-12)
    assert 0.0 < fast < 1.0


def test_self_bleu_takes_a_fixed_number_of_documents():
    rng = np.random.default_rng(4)
    vocab = np.array([f"w{i}" for i in range(30)])
    docs = [" ".join(rng.choice(vocab, 12)) for _ in range(60)] + ["x y"]
    ws = [d.split() for d in docs]
    # the first n documents of >= 4 words, in order: the same as scoring exactly those
    assert M.self_bleu4(ws, 10) == pytest.approx(_slow_self_bleu4(ws[:10]), rel=1e-12)
    assert M.self_bleu4(["x y".split()] + ws, 10) == M.self_bleu4(ws, 10)  # short ones are skipped
    assert math.isnan(M.self_bleu4(ws, 61))  # fewer documents than asked: NaN, never a smaller pool
    m = M.sample_metrics(docs, 100, bleu_docs=60)["samples/self_bleu4"]  # independent of the character budget
    assert m == M.self_bleu4(ws, 60)
    with pytest.raises(ValueError):
        M.self_bleu4(ws, 1)


def test_self_bleu_grows_with_the_pool_so_it_is_fixed():
    # Why the number of documents is fixed: on documents of one distribution self-BLEU rises with their number.
    rng = np.random.default_rng(0)
    vocab = np.array([f"w{i}" for i in range(300)])
    p = 1.0 / np.arange(1, 301)
    p /= p.sum()
    ws = [list(rng.choice(vocab, 15, p=p)) for _ in range(200)]
    scores = [M.self_bleu4(ws, n) for n in (25, 50, 100, 200)]
    assert scores == sorted(scores) and scores[-1] > scores[0] + 0.01
