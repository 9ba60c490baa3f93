"""The ground truth: measures against the synthetic language's exact probabilities (`truth/*`; synthetic corpora
only, data/synthetic.py).

- `truth/excess_bpc`, `truth/model_bpc`: the model's bits per character on fixed true text, minus the true bits per
  character of the same text (the KL rate from the truth; the text's own randomness cancels).
- On the samples (`truth_metrics`): `truth/valid_word_rate`, `truth/coverage`, `truth/valid_doc_rate`,
  `truth/sample_bpc`.

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
register("truth/model_bpc", "bits/char", "model bits/char on the fixed true text")
register("truth/valid_word_rate", "ratio", "share of sampled word tokens that are words of the language")
register("truth/coverage", "probability", "true stationary mass of the valid word types sampled")
register("truth/valid_doc_rate", "ratio", "share of whole sampled documents with non-zero true probability")
register("truth/sample_bpc", "bits/char", "true bits per character of the valid sampled documents")


def sample_truth(docs: list[str], n_chars: int, language: Any) -> dict[str, float]:
    """The `truth/…` sample measures of one generation's documents on a budget of `n_chars` characters."""
    kept, truncated = budget_with_cut(docs, n_chars)
    return truth_metrics(kept, Counter(w for d in kept for w in words(d)), language, last_truncated=truncated)


def truth_metrics(docs: list[str], gen_counts: Counter, language: Any, last_truncated: bool = False
                  ) -> dict[str, float]:
    """Ground-truth measures against a language with known probabilities (duck-typed: `is_valid_word(w)`,
    `word_set_mass(set)`, `logprob(doc_text)` in nats of one whole document, -inf if invalid).

    - `truth/valid_word_rate`: share of generated word tokens that are vocabulary words, in [0, 1].
    - `truth/coverage`: true stationary probability mass of the valid word types present in the samples.
    - `truth/valid_doc_rate`: share of (whole) documents with finite true log-probability.
    - `truth/sample_bpc`: true bits per character of the valid documents,
      -Σ logprob / (ln 2 · Σ (len + 1)); NaN if no document is valid.
    A last document cut by the character budget is not a whole document, so it is left out of the two
    document-level measures (`last_truncated=True`).
    """
    total = sum(gen_counts.values())
    valid_types = {w for w in gen_counts if language.is_valid_word(w)}
    valid_tokens = sum(gen_counts[w] for w in valid_types)
    whole = docs[:-1] if last_truncated and docs else docs
    nats, chars, n_valid = 0.0, 0, 0
    for d in whole:
        lp = float(language.logprob(d))
        if math.isfinite(lp):
            nats -= lp
            chars += len(d) + 1
            n_valid += 1
    return {
        "truth/valid_word_rate": valid_tokens / total if total else math.nan,
        "truth/coverage": float(language.word_set_mass(valid_types)),
        "truth/valid_doc_rate": n_valid / len(whole) if whole else math.nan,
        "truth/sample_bpc": nats / (math.log(2) * chars) if chars else math.nan,
    }


def excess_bpc(model, docs_ids: list[np.ndarray], true_nats: np.ndarray, tok, device, autocast_dtype=None):
    """(excess bits/char, model bits/char) on fixed true documents: (Σ model nats − Σ true nats) / (ln 2 · chars),
    the KL rate from the truth, measured on the same text so the text's own randomness cancels. Each document
    is scored with its EOT, which counts as one character."""
    nats = score_documents(model, docs_ids, tok.eot_id, device, autocast_dtype=autocast_dtype)
    chars = sum(tok.char_count(d) + 1 for d in docs_ids)
    return (float((nats.sum() - np.sum(true_nats)) / (math.log(2) * chars)),
            float(nats.sum() / (math.log(2) * chars)))
