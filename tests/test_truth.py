"""Ground truth for `truth/excess_bpc`: the exact next-character law of the synthetic language, used as a model.

`SyntheticLanguage.next_char_logprobs` must reproduce `logprob` exactly (the product over a document's
characters and its EOT), and a `TruthModel` built from it, scored by training/measures/real_text.py the way
training/loop.py does, must give excess bits/char ≈ 0, while a deliberately wrong model gives clearly > 0.

Run: python -m pytest tests/test_truth.py -q
"""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from data.synthetic import SyntheticConfig, SyntheticLanguage
from data.tokenizer import CharTokenizer
from training.measures.real_text import eval_windows, evaluate, score_documents
from training.measures.truth import excess_bpc

CPU = torch.device("cpu")


class TruthModel(nn.Module):
    """The language's exact next-character law behind the GPT forward contract of models/gpt.py.

    The context at position t is the text since the most recent EOT at or before t, or since the window start
    when there is none (so a window must start at a document start). `mix` > 0 blends in a uniform law over
    the vocabulary: log((1 - mix) p + mix / V), a deliberately wrong model. Contexts outside the language
    (e.g. the zero padding of a last evaluation window) get uniform logits; they are never scored.
    """

    def __init__(self, lang: SyntheticLanguage, tok: CharTokenizer, block_size: int, mix: float = 0.0):
        super().__init__()
        self.lang, self.tok, self.mix = lang, tok, mix
        self.config = SimpleNamespace(block_size=block_size, vocab_size=tok.vocab_size)
        self.dummy = nn.Parameter(torch.zeros(1))  # callers look up device/dtype from parameters
        self._cache: dict[str, np.ndarray] = {}

    def _logprobs(self, context: str | None) -> np.ndarray:
        """(V,) nats for the next token after `context` (None = outside the language)."""
        if context is None:
            return np.full(self.config.vocab_size, -math.log(self.config.vocab_size))
        out = self._cache.get(context)
        if out is None:
            try:
                out = self.lang.next_char_logprobs(context, self.tok.chars)  # chars..., then EOT = eot_id
            except ValueError:
                out = np.full(self.config.vocab_size, -math.log(self.config.vocab_size))
            if self.mix > 0:
                out = np.logaddexp(math.log1p(-self.mix) + out, math.log(self.mix / self.config.vocab_size))
            self._cache[context] = out
        return out

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean"):
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"context of {T} tokens exceeds model.block_size={self.config.block_size}")
        chars, eot = self.tok.chars, self.tok.eot_id
        logits = np.empty((B, T, self.config.vocab_size))  # (B, T, V) nats
        for b, row in enumerate(idx.tolist()):
            ctx: str | None = ""
            for t, i in enumerate(row):
                if i == eot:
                    ctx = ""
                elif ctx is not None:
                    ctx = ctx + chars[i] if i < len(chars) else None
                logits[b, t] = self._logprobs(ctx)
        logits = torch.from_numpy(logits).float().to(self.dummy.device)
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T), ignore_index=-1, reduction=reduction)
        return loss if reduction == "mean" else loss.view(B, T)


@pytest.fixture(scope="module")
def lang():
    return SyntheticLanguage(SyntheticConfig())


@pytest.fixture(scope="module")
def docs(lang):
    return lang.sample_chars(20_000, np.random.default_rng(7))


@pytest.fixture(scope="module")
def tok(lang, docs):
    # Fitted on sampled text plus the vocabulary, so every letter the language can emit has an id.
    return CharTokenizer.fit(docs + [" ".join(lang.vocab) + "."], unknown="error")


@pytest.fixture(scope="module")
def truth(lang, tok):
    return TruthModel(lang, tok, block_size=2048)


def test_next_char_product_equals_document_probability(lang, tok):
    docs = lang.sample_documents(300, np.random.default_rng(3))
    worst = 0.0
    for d in docs:
        ids = tok.encode(d).tolist()
        lp = sum(lang.next_char_logprobs(d[:i], tok.chars)[ids[i]] for i in range(len(d)))
        lp += lang.next_char_logprobs(d, tok.chars)[-1]  # then end-of-document
        worst = max(worst, abs(lp - lang.logprob(d)))  # = relative error of the product, to first order
    assert worst < 1e-9


def test_next_char_law_is_normalised_with_exact_special_cases(lang, tok, docs):
    for d in docs[:20]:
        for i in range(len(d) + 1):
            assert np.exp(lang.next_char_logprobs(d[:i], tok.chars)).sum() == pytest.approx(1.0, abs=1e-12)
    chars, eot = tok.chars, -1
    # Document start: first letters follow the start law's mass by first letter; no ' ', '.', EOT.
    lp0 = lang.next_char_logprobs("", chars)
    for c in "ab":
        mass = sum(p for w, p in zip(lang.vocab, lang.target) if w.startswith(c))
        assert lp0[chars.index(c)] == pytest.approx(math.log(mass), rel=1e-12)
    assert np.isneginf(lp0[[chars.index(" "), chars.index("."), eot]]).all()
    # After '.': ' ' with 1 - p_d, EOT with p_d, nothing else.
    w = docs[0].split(".")[0]
    p = np.exp(lang.next_char_logprobs(w + ".", chars))
    assert p[chars.index(" ")] == pytest.approx(1 - lang.p_end_doc) and p[eot] == pytest.approx(lang.p_end_doc)
    assert p.sum() == pytest.approx(1.0)
    # A complete word that is no prefix of another: ends with ' ' (1 - p_s) or '.' (p_s).
    lone = next(v for v in lang.vocab if not any(u != v and u.startswith(v) for u in lang.vocab))
    p = np.exp(lang.next_char_logprobs(lone, chars))
    assert p[chars.index(" ")] == pytest.approx(1 - lang.p_end_sentence)
    assert p[chars.index(".")] == pytest.approx(lang.p_end_sentence)
    # After "w ": first letters follow row w of the successor table, which never holds w itself.
    v = lang.vocab[0]
    after = np.exp(lang.next_char_logprobs(v + " ", chars))
    assert 0 not in lang.succ[0]
    by_letter = {}
    for j, p in zip(lang.succ[0].tolist(), lang.trans[0].tolist()):
        by_letter[lang.vocab[j][0]] = by_letter.get(lang.vocab[j][0], 0.0) + p
    np.testing.assert_allclose(after[:-1], [by_letter.get(c, 0.0) for c in chars], rtol=1e-12, atol=0)


@pytest.mark.parametrize("bad", [" ab", "ab  ", "ab..", "ab .", "qqqq", "Ab", "zzzzzzzzzzzzzz "])
def test_next_char_rejects_contexts_outside_the_language(lang, tok, bad):
    with pytest.raises(ValueError):
        lang.next_char_logprobs(bad, tok.chars)


def test_truth_model_meets_the_forward_contract(truth, tok, docs):
    stream = torch.from_numpy(np.concatenate([[tok.eot_id], tok.encode_docs(docs[:3])]).astype(np.int64))
    x, y = stream[None, :-1], stream[None, 1:].clone()
    y[0, :5] = -1
    logits = truth(x)
    assert logits.shape == (1, x.shape[1], tok.vocab_size)
    nats = truth(x, y, reduction="none")  # (B, T) nats, 0 where ignored
    expect = -F.log_softmax(logits, -1).gather(2, y.clamp(min=0)[..., None])[..., 0]
    torch.testing.assert_close(nats[0, 5:], expect[0, 5:])
    assert (nats[0, :5] == 0).all()
    assert truth(x, y).item() == pytest.approx(nats[0, 5:].mean().item(), rel=1e-6)


def test_truth_model_has_zero_excess_bpc_and_a_wrong_model_does_not(lang, tok, truth, docs):
    assert max(len(d) + 1 for d in docs) <= truth.config.block_size  # each document in one window
    true_nats = -lang.doc_logprobs(docs)
    ids = [tok.encode(d) for d in docs]
    nats = score_documents(truth, ids, tok.eot_id, device=CPU)
    np.testing.assert_allclose(nats, true_nats, rtol=1e-6)
    excess, _ = excess_bpc(truth, ids, true_nats, tok, CPU)  # what the loop records as truth/excess_bpc
    assert abs(excess) < 1e-6
    wrong = TruthModel(lang, tok, block_size=truth.config.block_size, mix=0.5)
    wrong_excess, _ = excess_bpc(wrong, ids, true_nats, tok, CPU)
    assert wrong_excess > 0.1  # mixing in uniform costs well above 0.1 bit/char here (≈ 0.82 measured)


def test_evaluate_truth_model_gives_the_entropy_rate(lang, tok, docs):
    # One window spanning the whole stream, which starts with EOT: every context starts at a document start
    # (windows that split documents would need the model to know where the document began).
    stream = np.concatenate([[tok.eot_id], tok.encode_docs(docs)]).astype(np.int64)
    model = TruthModel(lang, tok, block_size=len(stream) - 1)
    x, y = eval_windows(stream, model.config.block_size, len(stream) - 1)
    assert x.shape[0] == 1
    out = evaluate(model, x, y, chars=int((y >= 0).sum()), device=CPU)
    exact = -lang.doc_logprobs(docs).sum() / (math.log(2) * (len(stream) - 1))
    assert out["val/bpc"] == pytest.approx(exact, rel=1e-6)
    assert out["val/bpc"] == pytest.approx(lang.entropy_rate_bits_per_char(), rel=0.05)


def test_event_logprobs_add_up_to_the_document_probability(lang):
    # truth/sample_bpc reads samples as events; on valid documents the events are exactly logprob and len + 1.
    for d in lang.sample_documents(200, np.random.default_rng(5)):
        events = lang.event_logprobs(d, ended=True)
        assert all(lp is not None for lp, _ in events)
        assert sum(lp for lp, _ in events) == pytest.approx(lang.logprob(d), rel=1e-12)
        assert sum(c for _, c in events) == len(d) + 1
    w = lang.vocab[0]
    bad = lang.event_logprobs(f"{w} qqq {w}.", ended=True)
    assert [lp is None for lp, _ in bad] == [False, True, True, False]  # unknown word, then no transition from it
    assert sum(c for _, c in bad) == len(f"{w} qqq {w}.") + 1
    assert lang.event_logprobs(f"{w}  {w}.", ended=True)[1][0] is None  # a double space is no separator
    cut = lang.event_logprobs(f"{w}. {w[:1]}", ended=False)  # cut mid-word: the partial word and the end left out
    assert len(cut) == 1 and cut[0] == (pytest.approx(math.log(lang.target[0])), len(w))
