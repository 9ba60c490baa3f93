"""The ground truth: measures against the synthetic language's exact probabilities (`truth/*`; synthetic corpora
only, data/synthetic.py).

- `truth/excess_bpc`, `truth/model_bpc`: the model's bits per character on fixed true text, minus the true bits per
  character of the same text (the KL rate from the truth; the text's own randomness cancels).
- On the samples (`sample_truth`, on the measured character budget): `truth/valid_word_rate`, `truth/coverage`,
  `truth/valid_doc_rate`, and `truth/sample_bpc` with `truth/invalid_char_rate` beside it: the text is read as the
  language's events (`SyntheticLanguage.event_logprobs`: a word given the one before, a new sentence, the end of a
  document); `truth/sample_bpc` is the true bits per character of the possible events, `truth/invalid_char_rate`
  the share of characters (EOT counting 1) in impossible ones. Both are defined for any sample with one possible
  event, so they compare across generations; on a sample of valid documents they are the true bits per character
  of that text and 0.

Tests: `python -m pytest tests/test_truth.py tests/test_metrics.py`
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from training.measures.real_text import score_documents
from training.measures.registry import register
from training.measures.sample_text import budget_with_cut, words

register("truth/excess_bpc", "bits/char", "model bits/char minus true bits/char on the same fixed true text", main=5)
register("truth/model_bpc", "bits/char", "model bits/char on the fixed true text (truth/excess_bpc's first term)")
register("truth/valid_word_rate", "ratio", "share of sampled word tokens that are words of the language")
register("truth/coverage", "probability", "true stationary mass of the valid word types sampled")
register("truth/valid_doc_rate", "ratio", "share of the measured documents the model ended that have non-zero true "
         "probability")
register("truth/sample_bpc", "bits/char", "true bits per character of the possible events of the measured samples "
         "(words given the previous word, sentence and document ends)")
register("truth/invalid_char_rate", "ratio", "share of the measured sample characters (EOT counts 1) in events the "
         "language cannot produce")


def sample_truth(docs: list[str], ended: list[bool], n_chars: int, language: Any) -> dict[str, float]:
    """The `truth/…` sample measures of one generation's documents on a budget of `n_chars` characters; ended[i]:
    document i was ended by the model (not cut by the length cap). A document cut by the budget counts as cut."""
    kept, truncated = budget_with_cut(docs, n_chars)
    flags = list(ended[:len(kept)])
    if truncated:
        flags[-1] = False
    return truth_metrics(kept, flags, Counter(w for d in kept for w in words(d)), language)


def truth_metrics(docs: list[str], ended: list[bool], gen_counts: Counter, language: Any) -> dict[str, float]:
    """Ground-truth measures against a language with known probabilities (duck-typed: `is_valid_word(w)`,
    `word_set_mass(set)`, `event_logprobs(doc_text, ended)` -> [(nats or None, characters)]).

    - `truth/valid_word_rate`: share of generated word tokens that are vocabulary words, in [0, 1].
    - `truth/coverage`: true stationary probability mass of the valid word types present in the samples.
    - `truth/valid_doc_rate`: share of the ended documents all of whose events are possible; NaN if none ended.
    - `truth/sample_bpc`: -Σ nats of possible events / (ln 2 · Σ their characters); NaN only without one.
    - `truth/invalid_char_rate`: characters of impossible events / characters of all events, in [0, 1].
    """
    total = sum(gen_counts.values())
    valid_types = {w for w in gen_counts if language.is_valid_word(w)}
    valid_tokens = sum(gen_counts[w] for w in valid_types)
    nats, good_chars, all_chars, whole, valid_docs = 0.0, 0, 0, 0, 0
    for d, e in zip(docs, ended):
        events = language.event_logprobs(d, e)
        ok = True
        for lp, chars in events:
            all_chars += chars
            if lp is None:
                ok = False
            else:
                nats -= lp
                good_chars += chars
        if e:
            whole += 1
            valid_docs += ok
    return {
        "truth/valid_word_rate": valid_tokens / total if total else math.nan,
        "truth/coverage": float(language.word_set_mass(valid_types)),
        "truth/valid_doc_rate": valid_docs / whole if whole else math.nan,
        "truth/sample_bpc": nats / (math.log(2) * good_chars) if good_chars else math.nan,
        "truth/invalid_char_rate": 1.0 - good_chars / all_chars if all_chars else math.nan,
    }


def excess_bpc(model, docs_ids: list[np.ndarray], true_nats: np.ndarray, tok, device, autocast_dtype=None):
    """(excess bits/char, model bits/char) on fixed true documents: (Σ model nats − Σ true nats) / (ln 2 · chars),
    the KL rate from the truth, measured on the same text so the text's own randomness cancels. Each document
    is scored with its EOT, which counts as one character."""
    nats = score_documents(model, docs_ids, tok.eot_id, device, autocast_dtype=autocast_dtype)
    chars = sum(tok.char_count(d) + 1 for d in docs_ids)
    return (float((nats.sum() - np.sum(true_nats)) / (math.log(2) * chars)),
            float(nats.sum() / (math.log(2) * chars)))
