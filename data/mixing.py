"""Mixing: build generation g's training token stream from real data and the models' own samples.

Shares are exact in tokens. With budget B = `mix.tokens_per_generation` and λ = `mix.fresh_fraction`:
generation 0 trains on B real tokens; generation g >= 1 adds R = round(λ·B) real tokens and S = B − R tokens
sampled from model g−1 (kept as the token ids that were sampled, never decoded and re-encoded).
- `replace`: train on this generation's R real + S synthetic tokens (a fixed budget B).
- `accumulate` (Gerstgrasser et al. 2024): train on everything so far, generation 0's real data included; grows by B
  (by S only with `fixed` real data: the pool holds generation 0's real set once, never a second copy).
- `accumulate-subsample` (Kazdan et al. 2024): B tokens drawn by document, without replacement, from that pool.
Real data are `fresh` (tokens never used before in this run: new draws of the synthetic language, or the next
unused documents of a finite corpus, read from its train token array, which may be a memory map of the token
cache) or `fixed` (generation 0's real set; under `replace` its first R tokens at g >= 1). A finite corpus that runs
out of fresh data is refused with the number of generations it can feed, unless `mix.allow_reuse=true` (the reads
then wrap around to the start of the train split).

Every document in a training stream ends with the end-of-document token (EOT), real and synthetic alike
(`fit_documents`): a portion is whole documents from a document start, and the one document cut to make the share
exact is ended by an EOT in its last token, so no document is ever glued to the next. A sampled document cut by
`sample.max_new_tokens` (`mix.cut_samples`) is `keep` (its own document, ended by EOT like the others) or `drop`
(left out of the training stream; the loop samples until the documents the model ended fill the share).
Provenance counts: `mix/real_tokens`, `mix/synthetic_tokens` (what the generation trains on) and
`mix/real_distinct_tokens` (real tokens counted once per position of the real source: below `mix/real_tokens`
only when a wrapped corpus (`mix.allow_reuse`) puts the same text in an accumulated pool twice).
Tested in tests/test_mixing.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

WORKFLOWS = ("replace", "accumulate", "accumulate-subsample")
CUT_SAMPLES = ("keep", "drop")
_SCAN = 1 << 16  # tokens read at a time when looking for the next document start in a finite corpus


@dataclass
class MixConfig:
    fresh_fraction: float = field(default=0.0, metadata={"help": "λ: share of real tokens in generations >= 1 (0 = fully synthetic)"})
    tokens_per_generation: int = field(default=100_000, metadata={"help": "B: tokens in one generation's training set; 0 = the whole real train split of a finite corpus (resolved when the run starts)"})
    workflow: str = field(default="replace", metadata={"help": "replace | accumulate | accumulate-subsample"})
    real_data: str = field(default="fresh", metadata={"help": "fresh (never used before in this run) | fixed (generation 0's real set)"})
    allow_reuse: bool = field(default=False, metadata={"help": "fresh real data from a finite corpus wrap around to its start when it runs out (else the run is refused)"})
    cut_samples: str = field(default="keep", metadata={"help": "a sample cut by sample.max_new_tokens: keep (its own document, ended by EOT) | drop (not trained on)"})

    def __post_init__(self):
        if not 0.0 <= self.fresh_fraction <= 1.0:
            raise ValueError(f"mix.fresh_fraction must be in [0, 1], got {self.fresh_fraction}")
        if self.tokens_per_generation < 0:
            raise ValueError(f"mix.tokens_per_generation must be >= 1 (0 = the whole real train split), got "
                             f"{self.tokens_per_generation}")
        if self.workflow not in WORKFLOWS:
            raise ValueError(f"mix.workflow must be one of {', '.join(WORKFLOWS)}, got {self.workflow!r}")
        if self.real_data not in ("fresh", "fixed"):
            raise ValueError(f"mix.real_data must be fresh or fixed, got {self.real_data!r}")
        if self.cut_samples not in CUT_SAMPLES:
            raise ValueError(f"mix.cut_samples must be keep or drop, got {self.cut_samples!r}")

    def real_tokens(self, generation: int) -> int:
        """Real tokens added at this generation."""
        return self.tokens_per_generation if generation == 0 else int(round(self.fresh_fraction * self.tokens_per_generation))

    def synthetic_tokens(self, generation: int) -> int:
        """Synthetic tokens (from model g−1) added at this generation."""
        return 0 if generation == 0 else self.tokens_per_generation - self.real_tokens(generation)


def fit_documents(ids: np.ndarray, n: int, eot_id: int) -> np.ndarray:
    """The first n tokens of a stream of EOT-ended documents, as int32, the last one ended by EOT: the document
    cut to make the share exact keeps its first tokens and gets an EOT in place of its n-th token."""
    out = np.array(ids[:n], dtype=np.int32)
    if len(out) < n:
        raise ValueError(f"{len(out)} tokens where {n} are needed")
    if n and out[-1] != eot_id:
        out[-1] = eot_id
    return out


def synthetic_stream(docs: list[np.ndarray], ended: list[bool], policy: str, eot_id: int) -> np.ndarray:
    """The sampled documents as a training stream (int32), each ended by EOT; `policy` (mix.cut_samples) says
    whether a document cut by the length cap (ended[i] False) is kept or dropped."""
    keep = [d for d, e in zip(docs, ended) if e or policy == "keep"]
    if not keep:
        return np.zeros(0, dtype=np.int32)
    return np.concatenate([np.append(np.asarray(d, dtype=np.int32), eot_id) for d in keep]).astype(np.int32)


class RealSource:
    """Real token portions per generation, deterministic from the run seed (so a resumed run gets the same).

    Each portion is exactly cfg.real_tokens(g) tokens of whole documents ended by EOT (`fit_documents`). In a
    finite corpus portion g starts at the first document start at or after the end of portion g−1, so no
    portion begins inside a document and no token is read twice (the rest of a cut document is skipped)."""

    def __init__(self, corpus, tokenizer, cfg: MixConfig, seed: int, stream: np.ndarray | None = None):
        """stream: the finite corpus's train ids (e.g. the token cache's memmap); encoded here when not given."""
        self.corpus, self.tok, self.cfg, self.seed = corpus, tokenizer, cfg, seed
        self.eot = tokenizer.eot_id
        # A finite corpus is consumed in its train order: one stream, read with a cursor.
        if corpus.infinite:
            self.stream = None
        else:
            self.stream = stream if stream is not None else tokenizer.encode_docs(corpus.train_docs)
        self._starts = [0]  # cursor (unbounded: position modulo len(stream)) of portion g's first token

    def _doc_start(self, pos: int) -> int:
        """The first document start at or after cursor `pos` (a wrap to the stream's start is one)."""
        total = len(self.stream)
        while pos % total and self.stream[pos % total - 1] != self.eot:
            at = pos % total
            chunk = np.asarray(self.stream[at:min(at + _SCAN, total)])
            hit = np.flatnonzero(chunk == self.eot)
            if len(hit):
                return pos + int(hit[0]) + 1
            pos += len(chunk)
        return pos

    def _start(self, generation: int) -> int:
        while len(self._starts) <= generation:
            g = len(self._starts) - 1
            self._starts.append(self._doc_start(self._starts[g] + self.cfg.real_tokens(g)))
        return self._starts[generation]

    def _fits(self, generation: int) -> bool:
        return self._start(generation) + self.cfg.real_tokens(generation) <= len(self.stream)

    def generations_supported(self, limit: int = 100_000) -> int | None:
        """How many generations the corpus can feed at this budget (None = unlimited; counted up to `limit`)."""
        if self.stream is None:
            return None
        if len(self.stream) < self.cfg.tokens_per_generation:
            return 0
        if self.cfg.real_data == "fixed" or self.cfg.real_tokens(1) == 0 or self.cfg.allow_reuse:
            return None
        g = 1
        while g < limit and self._fits(g):
            g += 1
        return g

    def portion(self, generation: int) -> np.ndarray:
        """The real tokens added at `generation` (exactly cfg.real_tokens(generation) of them, EOT-ended)."""
        n = self.cfg.real_tokens(generation)
        if self.cfg.real_data == "fixed" and generation > 0:
            return fit_documents(self.portion(0), n, self.eot)
        if self.stream is not None:
            total = len(self.stream)
            if n > total or (not self.cfg.allow_reuse and not self._fits(generation)):
                raise ValueError(
                    f"the corpus ran out of fresh real data at generation {generation}: it holds "
                    f"{total} train tokens and feeds {self.generations_supported()} generations at this "
                    "budget; use --mix.allow_reuse=true (wrap around), --mix.real_data=fixed, a smaller "
                    "--mix.tokens_per_generation, or a larger corpus"
                )
            start = self._start(generation) % total
            if start + n <= total:
                return fit_documents(self.stream[start:start + n], n, self.eot)
            return fit_documents(np.concatenate([self.stream[start:], self.stream[:start + n - total]]), n, self.eot)
        # Synthetic language: fresh documents drawn for this generation alone.
        rng = np.random.default_rng([self.seed, generation, 0xF4E5])
        out, have = [], 0
        while have < n:  # a tokenizer may give fewer tokens than characters: draw until there are enough
            ids = self.tok.encode_docs(self.corpus.fresh_docs(max(n - have, 1000), rng))
            out.append(ids)
            have += len(ids)
        return fit_documents(np.concatenate(out), n, self.eot) if out else np.zeros(0, dtype=np.int32)

    def origin(self, generation: int) -> list[tuple[int, int, int]]:
        """Where portion(generation) comes from: (source, start, stop) segments covering it in order. Source -1 is
        the finite corpus's train stream (positions in it); source k >= 0 the synthetic language's draw at
        generation k (positions in that draw). Equal (source, position) = the same real token."""
        n = self.cfg.real_tokens(generation)
        if self.cfg.real_data == "fixed" and generation > 0:
            return [(src, a, a + n) for src, a, _ in self.origin(0)]  # generation 0's first n tokens
        if self.stream is None:
            return [(generation, 0, n)]
        total = len(self.stream)
        start = self._start(generation) % total
        if start + n <= total:
            return [(-1, start, start + n)]
        return [(-1, start, total), (-1, 0, start + n - total)]


def _distinct(segments: list[tuple[int, int, int]]) -> int:
    """Tokens covered by a union of (source, start, stop) segments."""
    total, last = 0, {}
    for src, a, b in sorted(segments):
        lo = max(a, last.get(src, a))
        total += max(0, b - lo)
        last[src] = max(b, last.get(src, b))
    return total


def _slice_origin(segments, a: int, b: int) -> list[tuple[int, int, int]]:
    """The origin segments of tokens [a, b) of a part whose origin is `segments`."""
    out, at = [], 0
    for src, s, e in segments:
        lo, hi = max(a, at), min(b, at + e - s)
        if lo < hi:
            out.append((src, s + lo - at, s + hi - at))
        at += e - s
    return out


def assemble(generation: int, cfg: MixConfig, real: list[np.ndarray], synthetic: list[np.ndarray],
             eot_id: int, rng: np.random.Generator, real_origin: list | None = None
             ) -> tuple[np.ndarray, dict[str, int]]:
    """Training stream of `generation` and its provenance counts.

    real[k]: real tokens added at generation k (k = 0..g); synthetic[k]: synthetic tokens added at generation k
    (synthetic[0] is empty); every part is EOT-ended documents. real_origin[k]: `RealSource.origin(k)` (default:
    every part distinct). Only `accumulate` and `accumulate-subsample` look at k < g (with `fixed` real data only
    at real[0]: the pool holds generation 0's real set once); `rng` is used only by `accumulate-subsample`.
    """
    g = generation
    origin = real_origin or [[(k, 0, len(p))] for k, p in enumerate(real)]
    if cfg.workflow == "replace" or g == 0:
        parts = [(real[g], origin[g]), (synthetic[g], None)]
    else:
        ks = [0] if cfg.real_data == "fixed" else range(g + 1)
        parts = [(real[k], origin[k]) for k in ks] + [(synthetic[k], None) for k in range(1, g + 1)]
    parts = [(p, o) for p, o in parts if len(p)]
    if cfg.workflow == "accumulate-subsample" and g > 0:
        return _subsample(parts, cfg.tokens_per_generation, eot_id, rng)
    ids = np.concatenate([p for p, _ in parts]).astype(np.int32, copy=False)
    return ids, _counts([(len(p), o) for p, o in parts])


def _counts(pieces: list[tuple[int, list | None]]) -> dict[str, int]:
    """Provenance counts of (length, origin segments or None for synthetic) pieces."""
    return {"mix/real_tokens": sum(n for n, o in pieces if o is not None),
            "mix/synthetic_tokens": sum(n for n, o in pieces if o is None),
            "mix/real_distinct_tokens": _distinct([s for _, o in pieces if o is not None for s in o])}


def _subsample(parts, budget: int, eot_id: int, rng: np.random.Generator):
    """Draw whole documents (each ended by its EOT) uniformly without replacement until `budget` tokens; the last
    one drawn is cut to fit and ended by EOT (`fit_documents`)."""
    docs = []  # (part index, start, stop)
    for i, (p, _) in enumerate(parts):
        cuts = np.concatenate([[0], np.flatnonzero(p == eot_id) + 1])  # a document keeps its EOT
        if cuts[-1] < len(p):
            cuts = np.append(cuts, len(p))
        docs.extend((i, int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]))
    out, pieces, have = [], [], 0
    for j in rng.permutation(len(docs)).tolist():
        i, a, b = docs[j]
        b = min(b, a + budget - have)
        out.append(fit_documents(parts[i][0][a:b], b - a, eot_id))
        o = parts[i][1]
        pieces.append((b - a, None if o is None else _slice_origin(o, a, b)))
        have += b - a
        if have >= budget:
            break
    return np.concatenate(out).astype(np.int32, copy=False), _counts(pieces)
