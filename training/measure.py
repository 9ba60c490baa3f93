"""Per-generation measures of the samples that need a model or a picture, on top of training/metrics.py.

- `truth/excess_bpc`: the model's bits/char minus the true bits/char of the same fixed true text.
- `samples/ref_bpc`: bits per character of the generation-0 model on this generation's measured samples
  (Shumailov et al.'s measure: how surprising the new text is to the original model), with its per-document
  histogram in TensorBoard; `samples/self_bpc`: the same under the current model.
- A rank-frequency (Zipf) plot of the sampled words against the real train corpus, as a TensorBoard image.
Both use the documents inside the fixed character budget, so figures compare across generations.
Called by training/loop.py; tested in tests/test_loop.py.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np

from training.evaluate import score_documents
from training.metrics import take_char_budget, words


def budget_ids(docs_ids: list[np.ndarray], ended: list[bool], n_chars: int, char_count):
    """Whole sampled documents (token ids) and their `ended` flags, in order, until their characters (an EOT the
    model emitted counts 1) reach n_chars."""
    out, flags, have = [], [], 0
    for d, e in zip(docs_ids, ended):
        if have >= n_chars:
            break
        out.append(d)
        flags.append(e)
        have += char_count(d) + int(e)
    return out, flags


def bpc_of(model, docs_ids: list[np.ndarray], ended: list[bool], tok, device, autocast_dtype=None):
    """(mean bits/char over all documents, per-document bits/char); a document's EOT is scored (and counted as a
    character) only where the model emitted it, not where the length cap cut the document."""
    nats = score_documents(model, docs_ids, tok.eot_id, device, autocast_dtype=autocast_dtype, ended=ended)
    chars = np.array([tok.char_count(d) + int(e) for d, e in zip(docs_ids, ended)], dtype=np.float64)
    return float(nats.sum() / (math.log(2) * chars.sum())), nats / (math.log(2) * chars)


def excess_bpc(model, docs_ids: list[np.ndarray], true_nats: np.ndarray, tok, device, autocast_dtype=None):
    """(excess bits/char, model bits/char) on fixed true documents: (Σ model nats − Σ true nats) / (ln 2 · chars),
    the KL rate from the truth, measured on the same text so the text's own randomness cancels. Each document
    is scored with its EOT, which counts as one character."""
    nats = score_documents(model, docs_ids, tok.eot_id, device, autocast_dtype=autocast_dtype)
    chars = sum(tok.char_count(d) + 1 for d in docs_ids)
    return (float((nats.sum() - np.sum(true_nats)) / (math.log(2) * chars)),
            float(nats.sum() / (math.log(2) * chars)))


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
