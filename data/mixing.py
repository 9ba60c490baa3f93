"""Mixing: build generation g's training token stream from real data and the models' own samples.

Shares are exact in tokens. With budget B = `mix.tokens_per_generation` and λ = `mix.fresh_fraction`:
generation 0 trains on B real tokens; generation g >= 1 adds R = round(λ·B) real tokens and S = B − R tokens
sampled from model g−1 (kept as the token ids that were sampled, never decoded and re-encoded).
- `replace`: train on this generation's R real + S synthetic tokens (a fixed budget B).
- `accumulate` (Gerstgrasser et al. 2024): train on everything so far, generation 0's real data included; grows by B.
- `accumulate-subsample` (Kazdan et al. 2024): B tokens drawn by document, without replacement, from that pool.
Real data are `fresh` (tokens never used before in this run: new draws of the synthetic language, or the next
unused documents of a finite corpus: consecutive slices of its train token array, which may be a memory map of
the token cache) or `fixed` (generation 0's real set, its first R tokens at g >= 1). A finite corpus that runs out
of fresh data is refused with the number of generations it can feed, unless `mix.allow_reuse=true` (the slices
then wrap around to the start of the train split).
Tested in tests/test_mixing.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

WORKFLOWS = ("replace", "accumulate", "accumulate-subsample")


@dataclass
class MixConfig:
    fresh_fraction: float = field(default=0.0, metadata={"help": "λ: share of real tokens in generations >= 1 (0 = fully synthetic)"})
    tokens_per_generation: int = field(default=100_000, metadata={"help": "B: tokens in one generation's training set; 0 = the whole real train split of a finite corpus (resolved when the run starts)"})
    workflow: str = field(default="replace", metadata={"help": "replace | accumulate | accumulate-subsample"})
    real_data: str = field(default="fresh", metadata={"help": "fresh (never used before in this run) | fixed (generation 0's real set)"})
    allow_reuse: bool = field(default=False, metadata={"help": "fresh real data from a finite corpus wrap around to its start when it runs out (else the run is refused)"})

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

    def real_tokens(self, generation: int) -> int:
        """Real tokens added at this generation."""
        return self.tokens_per_generation if generation == 0 else int(round(self.fresh_fraction * self.tokens_per_generation))

    def synthetic_tokens(self, generation: int) -> int:
        """Synthetic tokens (from model g−1) added at this generation."""
        return 0 if generation == 0 else self.tokens_per_generation - self.real_tokens(generation)


class RealSource:
    """Real token portions per generation, deterministic from the run seed (so a resumed run gets the same)."""

    def __init__(self, corpus, tokenizer, cfg: MixConfig, seed: int, stream: np.ndarray | None = None):
        """stream: the finite corpus's train ids (e.g. the token cache's memmap); encoded here when not given."""
        self.corpus, self.tok, self.cfg, self.seed = corpus, tokenizer, cfg, seed
        # A finite corpus is consumed in its train order: one stream, read with a cursor.
        if corpus.infinite:
            self.stream = None
        else:
            self.stream = stream if stream is not None else tokenizer.encode_docs(corpus.train_docs)

    def generations_supported(self) -> int | None:
        """How many generations the corpus can feed at this budget (None = unlimited)."""
        if self.stream is None:
            return None
        n, b = len(self.stream), self.cfg.tokens_per_generation
        if n < b:
            return 0
        if self.cfg.real_data == "fixed" or self.cfg.real_tokens(1) == 0 or self.cfg.allow_reuse:
            return None
        return 1 + (n - b) // self.cfg.real_tokens(1)

    def portion(self, generation: int) -> np.ndarray:
        """The real tokens added at `generation` (exactly cfg.real_tokens(generation) of them)."""
        n = self.cfg.real_tokens(generation)
        if self.cfg.real_data == "fixed" and generation > 0:
            return self.portion(0)[:n]
        if self.stream is not None:
            start = 0 if generation == 0 else self.cfg.tokens_per_generation + (generation - 1) * n
            total = len(self.stream)
            if start + n > total and not (self.cfg.allow_reuse and n <= total):
                raise ValueError(
                    f"the corpus ran out of fresh real data at generation {generation}: it holds "
                    f"{total} train tokens and feeds {self.generations_supported()} generations at this "
                    "budget; use --mix.allow_reuse=true (wrap around), --mix.real_data=fixed, a smaller "
                    "--mix.tokens_per_generation, or a larger corpus"
                )
            start %= total
            if start + n <= total:
                return np.asarray(self.stream[start:start + n], dtype=np.int32)
            return np.concatenate([self.stream[start:], self.stream[:start + n - total]]).astype(np.int32)
        # Synthetic language: fresh documents drawn for this generation alone.
        rng = np.random.default_rng([self.seed, generation, 0xF4E5])
        out, have = [], 0
        while have < n:  # a tokenizer may give fewer tokens than characters: draw until there are enough
            ids = self.tok.encode_docs(self.corpus.fresh_docs(max(n - have, 1000), rng))
            out.append(ids)
            have += len(ids)
        return np.concatenate(out)[:n] if out else np.zeros(0, dtype=np.int32)


def assemble(generation: int, cfg: MixConfig, real: list[np.ndarray], synthetic: list[np.ndarray],
             eot_id: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, int]]:
    """Training stream of `generation` and its provenance counts.

    real[k]: real tokens added at generation k (k = 0..g); synthetic[k]: synthetic tokens added at generation k
    (synthetic[0] is empty). Only `accumulate` and `accumulate-subsample` look at k < g; `rng` is used only by
    `accumulate-subsample`.
    """
    g = generation
    if cfg.workflow == "replace" or g == 0:
        parts = [(real[g], True), (synthetic[g], False)]
    else:
        parts = [(p, is_real) for k in range(g + 1) for p, is_real in ((real[k], True), (synthetic[k], False))]
    if cfg.workflow == "accumulate-subsample" and g > 0:
        return _subsample(parts, cfg.tokens_per_generation, eot_id, rng)
    ids = np.concatenate([p for p, _ in parts]).astype(np.int32, copy=False)
    counts = {"mix/real_tokens": sum(len(p) for p, r in parts if r),
              "mix/synthetic_tokens": sum(len(p) for p, r in parts if not r)}
    return ids, counts


def _subsample(parts, budget: int, eot_id: int, rng: np.random.Generator):
    """Draw whole documents (split at EOT) uniformly without replacement until `budget` tokens; cut the last."""
    docs, real_flags = [], []
    for p, is_real in parts:
        cuts = np.flatnonzero(p == eot_id) + 1  # a document keeps its EOT
        for d in np.split(p, cuts):
            if len(d):
                docs.append(d)
                real_flags.append(is_real)
    out, n_real, n_syn, have = [], 0, 0, 0
    for i in rng.permutation(len(docs)).tolist():
        d = docs[i][: budget - have]
        out.append(d)
        if real_flags[i]:
            n_real += len(d)
        else:
            n_syn += len(d)
        have += len(d)
        if have >= budget:
            break
    ids = np.concatenate(out).astype(np.int32, copy=False)
    return ids, {"mix/real_tokens": n_real, "mix/synthetic_tokens": n_syn}
