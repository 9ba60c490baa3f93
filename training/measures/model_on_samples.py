"""The model on the samples: how surprising a generation's text is to a model, in bits per character.

- `samples/ref_bpc`: bits per character of the generation-0 model on this generation's measured samples
  (Shumailov et al.'s measure: how surprising the new text is to the original model), with its per-document
  histogram in TensorBoard; `samples/self_bpc`: the same under the current model (how predictable the model finds
  its own text).
Both score the whole documents inside the fixed character budget (`budget_ids`), so figures compare across
generations. Called by training/loop.py; tested in tests/test_loop.py.
"""
from __future__ import annotations

import math

import numpy as np

from training.measures.real_text import score_documents
from training.measures.registry import register

register("samples/ref_bpc", "bits/char", "the generation-0 model's bits per character on the measured samples "
         "(Shumailov et al.)", main=6)
register("samples/self_bpc", "bits/char", "the current model's bits per character on its own measured samples")


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
