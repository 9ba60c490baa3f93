"""Tests for data/mixing.py: exact real/synthetic shares, the three workflows, every document ended by EOT, pools
without duplicates, provenance counts, and the real-data source.

Run: python -m pytest tests/test_mixing.py -q
"""
from __future__ import annotations

import numpy as np
import pytest

from data.corpus import Corpus, CorpusConfig, load_corpus
from data.mixing import MixConfig, RealSource, assemble, fit_documents, synthetic_stream
from data.synthetic import SyntheticConfig
from data.tokenizer import CharTokenizer

EOT = 9


@pytest.mark.parametrize("kw,option", [
    ({"fresh_fraction": -0.1}, "mix.fresh_fraction"),
    ({"fresh_fraction": 1.01}, "mix.fresh_fraction"),
    ({"tokens_per_generation": -1}, "mix.tokens_per_generation"),  # 0 = the whole real train split
    ({"workflow": "mix"}, "mix.workflow"),
    ({"real_data": "old"}, "mix.real_data"),
    ({"cut_samples": "mark"}, "mix.cut_samples"),
])
def test_config_validation_names_option(kw, option):
    with pytest.raises(ValueError, match=option):
        MixConfig(**kw)


@pytest.mark.parametrize("lam,b,real,syn", [(0.3, 1000, 300, 700), (0.0, 1000, 0, 1000), (1.0, 1000, 1000, 0),
                                            (0.25, 10, 2, 8), (0.1, 7, 1, 6)])
def test_exact_shares(lam, b, real, syn):
    cfg = MixConfig(fresh_fraction=lam, tokens_per_generation=b)
    assert cfg.real_tokens(0) == b and cfg.synthetic_tokens(0) == 0
    for g in (1, 2, 5):
        assert cfg.real_tokens(g) == real and cfg.synthetic_tokens(g) == syn
        assert cfg.real_tokens(g) + cfg.synthetic_tokens(g) == b


def _doc_stream(rng: np.random.Generator, n: int, alphabet: range) -> np.ndarray:
    """Exactly n tokens from `alphabet`, as documents of 3..7 tokens each ending in EOT (none empty)."""
    out, left = [], n
    while left > 0:
        k = min(int(rng.integers(3, 8)), left)
        if left - k == 1:  # never leave a lone EOT (an empty document) at the end
            k = left
        out.extend(rng.choice(list(alphabet), size=k - 1).tolist() + [EOT])
        left -= k
    return np.array(out, dtype=np.int32)


def _pools(b: int, lam: float, gens: int):
    """Hand-made real (tokens 0..3) and synthetic (tokens 4..8) pools with exact per-generation sizes."""
    cfg = MixConfig(fresh_fraction=lam, tokens_per_generation=b)
    rng = np.random.default_rng(0)
    real = [_doc_stream(rng, cfg.real_tokens(g), range(0, 4)) if cfg.real_tokens(g) else np.zeros(0, np.int32)
            for g in range(gens)]
    syn = [_doc_stream(rng, cfg.synthetic_tokens(g), range(4, 9)) if cfg.synthetic_tokens(g) else np.zeros(0, np.int32)
           for g in range(gens)]
    return real, syn


def _is_real(ids):
    return ids < 4


def test_assemble_replace_has_budget_b():
    b, lam = 200, 0.3
    real, syn = _pools(b, lam, 4)
    cfg = MixConfig(fresh_fraction=lam, tokens_per_generation=b, workflow="replace")
    ids0, c0 = assemble(0, cfg, real, syn, EOT, np.random.default_rng(0))
    np.testing.assert_array_equal(ids0, real[0])
    assert c0 == {"mix/real_tokens": 200, "mix/synthetic_tokens": 0, "mix/real_distinct_tokens": 200}
    for g in (1, 2, 3):
        ids, c = assemble(g, cfg, real, syn, EOT, np.random.default_rng(0))
        assert len(ids) == b and ids.dtype == np.int32
        assert c == {"mix/real_tokens": 60, "mix/synthetic_tokens": 140, "mix/real_distinct_tokens": 60}
        np.testing.assert_array_equal(ids, np.concatenate([real[g], syn[g]]))


def test_assemble_accumulate_grows_by_b():
    b, lam = 100, 0.2
    real, syn = _pools(b, lam, 4)
    cfg = MixConfig(fresh_fraction=lam, tokens_per_generation=b, workflow="accumulate")
    for g in range(4):
        ids, c = assemble(g, cfg, real, syn, EOT, np.random.default_rng(0))
        assert len(ids) == b * (g + 1)
        assert c["mix/real_tokens"] == b + 20 * g
        assert c["mix/synthetic_tokens"] == 80 * g
        assert c["mix/real_tokens"] + c["mix/synthetic_tokens"] == len(ids)
        assert c["mix/real_distinct_tokens"] == c["mix/real_tokens"]
        # Everything so far, generation 0's real data included.
        np.testing.assert_array_equal(ids[:b], real[0])


def test_assemble_accumulate_subsample():
    b, lam = 150, 0.3
    real, syn = _pools(b, lam, 4)
    cfg = MixConfig(fresh_fraction=lam, tokens_per_generation=b, workflow="accumulate-subsample")
    pool_docs = set()
    for g in range(4):
        for p in (real[g], syn[g]):
            for d in np.split(p, np.flatnonzero(p == EOT) + 1):
                if len(d):
                    pool_docs.add(tuple(d.tolist()))
    for g in (1, 2, 3):
        ids, c = assemble(g, cfg, real, syn, EOT, np.random.default_rng(7))
        assert len(ids) == b
        assert c["mix/real_tokens"] + c["mix/synthetic_tokens"] == b
        # Provenance counts match the tokens (real and synthetic pools use disjoint alphabets; EOTs go with
        # their document, so count per drawn document).
        docs = np.split(ids, np.flatnonzero(ids == EOT) + 1)
        docs = [d for d in docs if len(d)]
        n_real = sum(len(d) for d in docs if _is_real(d[0]))
        lone = sum(len(d) == 1 for d in docs)  # a document cut to its EOT alone shows no provenance
        assert n_real <= c["mix/real_tokens"] <= n_real + lone
        # Whole documents, except possibly the cut last one: a prefix of a pool document ended by EOT.
        assert ids[-1] == EOT
        for d in docs[:-1]:
            assert tuple(d.tolist()) in pool_docs
        last = tuple(docs[-1].tolist())
        assert any(pd[: len(last) - 1] == last[:-1] for pd in pool_docs)
        # Deterministic for the same rng seed, different for another.
        ids2, c2 = assemble(g, cfg, real, syn, EOT, np.random.default_rng(7))
        np.testing.assert_array_equal(ids, ids2)
        assert c == c2
        ids3, _ = assemble(g, cfg, real, syn, EOT, np.random.default_rng(8))
        assert not np.array_equal(ids, ids3)
    # Generation 0 is just the real data, unsampled.
    ids0, c0 = assemble(0, cfg, real, syn, EOT, np.random.default_rng(7))
    np.testing.assert_array_equal(ids0, real[0])


def test_subsample_draws_without_replacement():
    # Every document distinct: the subsample must not repeat any of them.
    b = 60
    cfg = MixConfig(fresh_fraction=0.5, tokens_per_generation=b, workflow="accumulate-subsample")
    counter = iter(range(100, 10_000))

    def docs(n_docs):
        return np.array([t for _ in range(n_docs) for t in (next(counter), next(counter), EOT)], dtype=np.int32)

    real = [docs(20), docs(10), docs(10)]
    syn = [np.zeros(0, np.int32), docs(10), docs(10)]
    ids, c = assemble(2, cfg, real, syn, EOT, np.random.default_rng(0))
    assert len(ids) == b
    content = ids[ids != EOT]
    assert len(np.unique(content)) == len(content)


# --- RealSource -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def synth():
    corpus = load_corpus(CorpusConfig(synthetic_train_chars=2000, synthetic_val_chars=1000,
                                      synthetic=SyntheticConfig(vocab_size=50, branching=5)))
    return corpus, CharTokenizer.fit(corpus.train_docs)


def test_real_source_synthetic_fresh(synth):
    corpus, tok = synth
    cfg = MixConfig(fresh_fraction=0.3, tokens_per_generation=1000)
    src = RealSource(corpus, tok, cfg, seed=0)
    assert src.generations_supported() is None
    p = {g: src.portion(g) for g in range(3)}
    assert len(p[0]) == 1000 and len(p[1]) == 300 and len(p[2]) == 300
    assert all(p[g][-1] == tok.eot_id for g in range(3))  # the cut last document is ended by EOT
    # Deterministic (a new source with the same seed gives the same portions)...
    again = RealSource(corpus, tok, cfg, seed=0)
    for g in range(3):
        np.testing.assert_array_equal(again.portion(g), p[g])
    # ...fresh per generation, and per seed.
    assert not np.array_equal(p[1], p[2])
    assert not np.array_equal(p[0][:300], p[1])
    assert not np.array_equal(RealSource(corpus, tok, cfg, seed=1).portion(1), p[1])
    # Real text of the language: decodes to documents the tokenizer knows.
    assert tok.eot_id in p[0]


def test_real_source_synthetic_fixed_is_prefix_of_gen0(synth):
    corpus, tok = synth
    cfg = MixConfig(fresh_fraction=0.3, tokens_per_generation=1000, real_data="fixed")
    src = RealSource(corpus, tok, cfg, seed=0)
    p0 = src.portion(0)
    for g in (1, 2, 4):
        pg = src.portion(g)
        assert len(pg) == 300 and pg[-1] == tok.eot_id
        np.testing.assert_array_equal(pg[:-1], p0[:299])
    assert len(RealSource(corpus, tok, MixConfig(tokens_per_generation=1000), 0).portion(3)) == 0  # λ = 0


def _finite(n_docs: int):
    docs = [f"doc {i} text." for i in range(n_docs)]
    corpus = Corpus.from_lists("t", "x", docs, ["val."])
    return corpus, CharTokenizer.fit(docs)


def test_real_source_finite_fresh_portions_start_at_documents_and_never_overlap():
    corpus, tok = _finite(30)
    stream = tok.encode_docs(corpus.train_docs)
    n = len(stream)
    b, lam = 100, 0.25
    cfg = MixConfig(fresh_fraction=lam, tokens_per_generation=b)
    src = RealSource(corpus, tok, cfg, seed=0)
    supported = src.generations_supported()
    assert 1 < supported <= 1 + (n - b) // 25
    pos = 0
    for g in range(supported):
        p = src.portion(g)
        size = b if g == 0 else 25
        assert len(p) == size and p[-1] == tok.eot_id  # exact share, ended by EOT
        (start,) = src.origin(g)[0][1:2]
        assert start >= pos and (start == 0 or stream[start - 1] == tok.eot_id)  # a document start, after g−1
        # the stream's tokens, the last one replaced by EOT where the share cuts a document
        np.testing.assert_array_equal(p[:-1], stream[start:start + size - 1])
        pos = start + size
    with pytest.raises(ValueError, match=f"feeds {supported} generations"):
        src.portion(supported)
    # The seed does not matter for a finite corpus: its train order is already the seeded permutation.
    np.testing.assert_array_equal(RealSource(corpus, tok, cfg, seed=9).portion(1), src.portion(1))


def test_fit_documents_and_synthetic_stream():
    s = np.array([1, 2, EOT, 3, 4, 5, EOT], dtype=np.int32)
    np.testing.assert_array_equal(fit_documents(s, 3, EOT), [1, 2, EOT])  # a whole document stays as it is
    np.testing.assert_array_equal(fit_documents(s, 5, EOT), [1, 2, EOT, 3, EOT])  # a cut one is ended by EOT
    assert len(fit_documents(s, 0, EOT)) == 0
    with pytest.raises(ValueError):
        fit_documents(s, 8, EOT)
    docs, ended = [np.array([1, 2]), np.array([3, 4, 5]), np.array([], dtype=np.int32)], [True, False, True]
    np.testing.assert_array_equal(synthetic_stream(docs, ended, "keep", EOT), [1, 2, EOT, 3, 4, 5, EOT, EOT])
    np.testing.assert_array_equal(synthetic_stream(docs, ended, "drop", EOT), [1, 2, EOT, EOT])


@pytest.mark.parametrize("workflow", ["replace", "accumulate", "accumulate-subsample"])
def test_every_document_of_every_stream_ends_with_eot(synth, workflow):
    # Real portions and synthetic shares as the loop builds them: no document is glued to the next.
    corpus, tok = synth
    cfg = MixConfig(fresh_fraction=0.3, tokens_per_generation=500, workflow=workflow)
    src = RealSource(corpus, tok, cfg, seed=0)
    rng = np.random.default_rng(1)
    docs = [tok.encode(d) for d in corpus.language.sample_documents(200, rng)]
    synth_stream = synthetic_stream(docs, [True] * len(docs), "keep", tok.eot_id)
    real = [src.portion(k) for k in range(3)]
    syn = [np.zeros(0, np.int32)] + [fit_documents(synth_stream[k * 400:], 350, tok.eot_id) for k in (1, 2)]
    for g in range(3):
        ids, _ = assemble(g, cfg, real[:g + 1], syn[:g + 1], tok.eot_id, np.random.default_rng(g))
        assert ids[-1] == tok.eot_id
        for d in tok.split_docs(ids):  # every document decodes to text of the language or a cut prefix of it
            text = tok.decode_doc(d)
            assert text == "" or text[0].isalpha()  # starts at a document start, never mid-document


def test_fixed_accumulate_pool_holds_generation_0_real_set_once(synth):
    corpus, tok = synth
    for workflow in ("accumulate", "accumulate-subsample"):
        cfg = MixConfig(fresh_fraction=0.5, tokens_per_generation=400, workflow=workflow, real_data="fixed")
        src = RealSource(corpus, tok, cfg, seed=0)
        real = [src.portion(k) for k in range(4)]
        origin = [src.origin(k) for k in range(4)]
        syn = [np.zeros(0, np.int32)] + [np.tile(np.array([30, 31, tok.eot_id], np.int32), 67)[:200]
                                         for _ in range(3)]
        for g in range(4):
            ids, c = assemble(g, cfg, real, syn, tok.eot_id, np.random.default_rng(0), real_origin=origin)
            assert c["mix/real_distinct_tokens"] == c["mix/real_tokens"]
            if workflow == "accumulate":
                assert c["mix/real_tokens"] == 400  # generation 0's real set, once, at every generation
                np.testing.assert_array_equal(ids[:400], real[0])
                assert c["mix/synthetic_tokens"] == 200 * g and len(ids) == 400 + 200 * g
            else:
                assert len(ids) == 400 and c["mix/real_tokens"] <= 400


def test_real_distinct_tokens_count_a_wrapped_corpus_once():
    corpus, tok = _finite(30)
    n = len(tok.encode_docs(corpus.train_docs))
    cfg = MixConfig(fresh_fraction=1.0, tokens_per_generation=n // 2, workflow="accumulate", allow_reuse=True)
    src = RealSource(corpus, tok, cfg, seed=0)
    g = 4  # five portions of half the corpus each: the pool reads it about 2.5 times
    real = [src.portion(k) for k in range(g + 1)]
    ids, c = assemble(g, cfg, real, [np.zeros(0, np.int32)] * (g + 1), tok.eot_id, np.random.default_rng(0),
                      real_origin=[src.origin(k) for k in range(g + 1)])
    assert c["mix/real_tokens"] == 5 * (n // 2)
    assert c["mix/real_distinct_tokens"] <= n < c["mix/real_tokens"]
    assert c["mix/real_distinct_tokens"] > 0.9 * n


def test_real_source_finite_generations_supported():
    corpus, tok = _finite(30)
    n = len(tok.encode_docs(corpus.train_docs))
    assert RealSource(corpus, tok, MixConfig(fresh_fraction=0.5, tokens_per_generation=n + 1), 0).generations_supported() == 0
    assert RealSource(corpus, tok, MixConfig(fresh_fraction=0.5, tokens_per_generation=n), 0).generations_supported() == 1
    fixed = MixConfig(fresh_fraction=0.5, tokens_per_generation=100, real_data="fixed")
    src = RealSource(corpus, tok, fixed, 0)
    assert src.generations_supported() is None
    np.testing.assert_array_equal(src.portion(50), fit_documents(src.portion(0), 50, tok.eot_id))
    assert RealSource(corpus, tok, MixConfig(fresh_fraction=0.0, tokens_per_generation=100), 0).generations_supported() is None
    # A corpus smaller than one generation cannot even feed generation 0.
    small = RealSource(corpus, tok, MixConfig(tokens_per_generation=n + 1), 0)
    with pytest.raises(ValueError, match="feeds 0 generations"):
        small.portion(0)
