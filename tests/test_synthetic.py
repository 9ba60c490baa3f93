"""Tests of the synthetic language (data/synthetic.py): determinism, format, exact probabilities, entropy rate.

Run: python -m pytest tests/test_synthetic.py -q
"""
import itertools
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data.synthetic import SyntheticConfig, SyntheticLanguage

DOC_PATTERN = re.compile(r"^[a-z]+( [a-z]+)*\.( [a-z]+( [a-z]+)*\.)*$")


@pytest.fixture(scope="module")
def lang():
    return SyntheticLanguage(SyntheticConfig())


@pytest.fixture(scope="module")
def docs(lang):
    return lang.sample_documents(20_000, np.random.default_rng(123))


def test_same_seed_same_language_and_samples(lang):
    other = SyntheticLanguage(SyntheticConfig())
    assert other.vocab == lang.vocab
    np.testing.assert_array_equal(other.succ, lang.succ)
    np.testing.assert_array_equal(other.trans, lang.trans)
    a = lang.sample_documents(200, np.random.default_rng(5))
    b = other.sample_documents(200, np.random.default_rng(5))
    assert a == b
    assert a != lang.sample_documents(200, np.random.default_rng(6))
    assert other.fingerprint() == lang.fingerprint()


def test_different_seed_different_language(lang):
    other = SyntheticLanguage(SyntheticConfig(seed=1))
    assert other.vocab != lang.vocab
    assert other.fingerprint() != lang.fingerprint()
    assert other.sample_documents(50, np.random.default_rng(5)) != lang.sample_documents(50, np.random.default_rng(5))


def test_fingerprint_stable_across_processes(lang):
    code = "from data.synthetic import *; print(SyntheticLanguage(SyntheticConfig(vocab_size=50, branching=4)).fingerprint())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == SyntheticLanguage(SyntheticConfig(vocab_size=50, branching=4)).fingerprint()


def test_vocab_words(lang):
    assert len(lang.vocab) == 2000 and len(set(lang.vocab)) == 2000
    assert all(re.fullmatch(r"[a-z]{2,10}", w) for w in lang.vocab)
    assert all(lang.word_index[w] == i for i, w in enumerate(lang.vocab))
    assert lang.is_valid_word(lang.vocab[7]) and not lang.is_valid_word("Zz")


def test_documents_match_format_and_statistics(lang, docs):
    assert all(DOC_PATTERN.match(d) for d in docs)
    sentences = [s for d in docs for s in d[:-1].split(". ")]
    assert abs(len(sentences) / len(docs) - 3.0) < 0.1  # mean sentences per document
    assert abs(np.mean([len(s.split(" ")) for s in sentences]) - 8.0) < 0.2  # mean words per sentence
    n_chars = sum(len(d) + 1 for d in docs)
    assert abs(n_chars / len(docs) / lang.expected_chars_per_doc() - 1) < 0.03
    # Empirical word frequencies follow the exact stationary distribution.
    counts = np.bincount([lang.word_index[w] for s in sentences for w in s.split(" ")], minlength=2000)
    pi = lang.stationary_word_distribution()
    np.testing.assert_allclose(counts[:5] / counts.sum(), pi[:5], rtol=0.05)


def test_logprob_finite_for_samples_and_inf_outside(lang, docs):
    assert np.isfinite(lang.doc_logprobs(docs[:500])).all()
    good = docs[0]
    w0 = good.split(" ")[0].rstrip(".")
    bad = ["", ".", good[:-1], good + " ", " " + good, good.replace(" ", "  ", 1), good.upper(),
           "qqqqqqqqqq.", good.replace(".", ",", 1), good + "\n", f"{w0} {w0}."]  # last: self-loops never occur
    for text in bad:
        assert lang.logprob(text) == -math.inf, text
    # A bigram outside the successor table has probability zero.
    a = 0
    b = next(j for j in range(1, 2000) if j not in set(lang.succ[a].tolist()))
    assert lang.logprob(f"{lang.vocab[a]} {lang.vocab[b]}.") == -math.inf
    assert math.isfinite(lang.logprob(f"{lang.vocab[a]} {lang.vocab[lang.succ[a, 0]]}."))


def test_probabilities_sum_to_one_exactly():
    """Enumerate every string of <= 4 words over a 10-word language, every sentence split: the mass of
    documents with at most n words is exactly 1 - (1 - p_s p_d)^n (lengths are geometric)."""
    cfg = SyntheticConfig(vocab_size=10, branching=2, mean_sentence_words=1.25, mean_doc_sentences=1.25)
    tiny = SyntheticLanguage(cfg)
    q = tiny.p_end_sentence * tiny.p_end_doc
    total = 0.0
    for n in range(1, 5):
        mass_n = 0.0
        for words in itertools.product(tiny.vocab, repeat=n):
            for breaks in itertools.product([" ", ". "], repeat=n - 1):
                text = words[0] + "".join(b + w for b, w in zip(breaks, words[1:])) + "."
                mass_n += math.exp(tiny.logprob(text))
        assert mass_n == pytest.approx(q * (1 - q) ** (n - 1), rel=1e-9)
        total += mass_n
    assert total == pytest.approx(1 - (1 - q) ** 4, rel=1e-9)
    assert total + (1 - q) ** 4 >= 0.999


def test_entropy_rate_matches_monte_carlo(lang, docs):
    lp = lang.doc_logprobs(docs)
    n_chars = sum(len(d) + 1 for d in docs)  # +1 per document for its end (EOT)
    mc_bpc = -lp.sum() / n_chars / math.log(2)
    exact = lang.entropy_rate_bits_per_char()
    assert abs(mc_bpc / exact - 1) < 0.02, (mc_bpc, exact)


def test_entropy_rate_tiny_language_monte_carlo():
    tiny = SyntheticLanguage(SyntheticConfig(vocab_size=12, branching=3, mean_sentence_words=2.0))
    docs = tiny.sample_documents(20_000, np.random.default_rng(0))
    mc_bpc = -tiny.doc_logprobs(docs).sum() / sum(len(d) + 1 for d in docs) / math.log(2)
    assert abs(mc_bpc / tiny.entropy_rate_bits_per_char() - 1) < 0.02


def test_stationary_zipf_exponent(lang):
    assert abs(lang.stationary_zipf_exponent() - 1.1) < 0.2
    pi = lang.stationary_word_distribution()
    assert pi.shape == (2000,) and (pi > 0).all() and pi.sum() == pytest.approx(1.0)
    assert lang.word_set_mass(set(lang.vocab)) == pytest.approx(1.0)
    assert lang.word_set_mass({lang.vocab[0], "notaword"}) == pytest.approx(pi[0])
    assert lang.word_set_mass(set()) == 0.0


def test_sample_chars_and_write_corpus(lang, tmp_path):
    out = lang.sample_chars(5000, np.random.default_rng(3))
    sizes = [len(d) + 1 for d in out]
    assert sum(sizes) >= 5000 > sum(sizes[:-1])
    assert lang.sample_chars(5000, np.random.default_rng(3)) == out
    path = tmp_path / "corpus.txt"
    lang.write_corpus(path, 3000, seed=4)
    assert path.read_text().rstrip("\n").split("\n\n") == lang.sample_chars(3000, np.random.default_rng(4))


@pytest.mark.parametrize("kwargs, option", [
    ({"vocab_size": 5}, "corpus.synthetic.vocab_size"),
    ({"zipf": 0.0}, "corpus.synthetic.zipf"),
    ({"branching": 0}, "corpus.synthetic.branching"),
    ({"vocab_size": 10, "branching": 10}, "corpus.synthetic.branching"),
    ({"mean_sentence_words": 1.0}, "corpus.synthetic.mean_sentence_words"),
    ({"mean_doc_sentences": 0.5}, "corpus.synthetic.mean_doc_sentences"),
    ({"seed": -1}, "corpus.synthetic.seed"),
])
def test_validation_names_option(kwargs, option):
    with pytest.raises(ValueError, match=re.escape(option)):
        SyntheticConfig(**kwargs)
