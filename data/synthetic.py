"""The built-in synthetic language: the offline default corpus, with a known ground truth.

A vocabulary of pseudo-words (lowercase syllables; frequent words are short) and a sparse word-bigram
Markov chain whose stationary word distribution is Zipf-like. Documents are sentences of words:

    word word word. word word. word word word word.

Generative process (every step is an *event* with an exact probability):
  1. a document's first word is drawn from the start distribution ``s`` (the target Zipf law);
  2. after each word i: with prob ``p_s = 1/mean_sentence_words`` the sentence ends, else the next
     word is drawn from row i of the successor table ``P`` (``branching`` successors per word,
     never the word itself);
  3. after a sentence ends: with prob ``p_d = 1/mean_doc_sentences`` the document ends, else the
     next sentence starts with a word drawn from ``s``.
So sentence lengths are geometric (mean ``mean_sentence_words`` words) and documents hold a geometric
number of sentences (mean ``mean_doc_sentences``). Documents contain only ``[a-z .]``.

Use: ``lang = SyntheticLanguage(SyntheticConfig()); docs = lang.sample_documents(100, rng)``;
``lang.logprob(doc)`` (nats), ``lang.entropy_rate_bits_per_char()``, and the exact next-character law
``lang.next_char_logprobs(doc_so_far, alphabet)`` (the ground-truth char-level model).
Test: ``python -m pytest tests/test_synthetic.py tests/test_truth.py -q``.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np

DOC_RE = re.compile(r"[a-z]+( [a-z]+)*\.( [a-z]+( [a-z]+)*\.)*")
PREFIX_RE = re.compile(r"(?:[a-z]+(?: [a-z]+)*\. )*(?:[a-z]+(?: [a-z]+)*[ .]?)?")  # a document so far
_ONSETS = list("bcdfghjklmnprstvwz") + ["br", "ch", "dr", "gr", "kl", "pl", "sh", "st", "th", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "i", "o", "ai", "ou", "y"]
_CODAS = ["", "", "", "n", "r", "s", "l", "t", "m", "k", "nd", "st"]
_FIT_TOP_RANKS = 1000  # ranks used to fit the stationary Zipf exponent (log-log slope)
_NOISE_SIGMA = 0.5  # log-normal noise on transition weights, so rows differ beyond their successor sets
_CALIBRATION_STEPS = 30  # multiplicative corrections pulling the stationary law toward the target Zipf law


@dataclass
class SyntheticConfig:
    vocab_size: int = field(default=2000, metadata={"help": "number of word types in the language (>= 10)"})
    zipf: float = field(default=1.1, metadata={"help": "Zipf exponent of the target word distribution (> 0)"})
    branching: int = field(default=16, metadata={"help": "successor words per word in the bigram chain (1..vocab_size-1; no self-loops)"})
    mean_sentence_words: float = field(default=8.0, metadata={"help": "mean sentence length, words (> 1)"})
    mean_doc_sentences: float = field(default=3.0, metadata={"help": "mean sentences per document (>= 1)"})
    seed: int = field(default=0, metadata={"help": "seed of the language itself (not of sampling)"})

    def __post_init__(self):
        p = "corpus.synthetic."
        if not 10 <= self.vocab_size <= 200_000:
            raise ValueError(f"{p}vocab_size must be in [10, 200000], got {self.vocab_size}")
        if not self.zipf > 0:
            raise ValueError(f"{p}zipf must be > 0, got {self.zipf}")
        if not 1 <= self.branching < self.vocab_size:
            raise ValueError(f"{p}branching must be in [1, vocab_size - 1 = {self.vocab_size - 1}], "
                             f"got {self.branching}")
        if not self.mean_sentence_words > 1:
            raise ValueError(f"{p}mean_sentence_words must be > 1, got {self.mean_sentence_words}")
        if not self.mean_doc_sentences >= 1:
            raise ValueError(f"{p}mean_doc_sentences must be >= 1, got {self.mean_doc_sentences}")
        if self.seed < 0:
            raise ValueError(f"{p}seed must be >= 0, got {self.seed}")


def _binary_entropy(p: float) -> float:
    """Entropy of a Bernoulli(p) event, nats."""
    return 0.0 if p in (0.0, 1.0) else -(p * math.log(p) + (1 - p) * math.log(1 - p))


def _make_vocab(n: int, rng: np.random.Generator) -> list[str]:
    """n distinct pseudo-words of 2..10 letters, ordered shortest first (rank 1 = shortest)."""
    words: set[str] = set()
    while len(words) < n:
        n_syl = rng.choice(4, size=4 * n, p=[0.2, 0.4, 0.3, 0.1]) + 1
        for k in n_syl:
            parts = []
            for _ in range(k):
                onset = "" if rng.random() < 0.15 else _ONSETS[rng.integers(len(_ONSETS))]
                parts.append(onset + _VOWELS[rng.integers(len(_VOWELS))] + _CODAS[rng.integers(len(_CODAS))])
            w = "".join(parts)
            if 2 <= len(w) <= 10:
                words.add(w)
    pool = sorted(words)  # sorted first: set order is not stable across processes
    chosen = [pool[i] for i in rng.permutation(len(pool))[:n]]
    # Zipf's law of abbreviation: frequent words are short. Ties keep the random order.
    return sorted(chosen, key=len)


class SyntheticLanguage:
    """A seeded word-bigram language with exact probabilities (see module docstring)."""

    def __init__(self, cfg: SyntheticConfig):
        self.cfg = cfg
        V, k = cfg.vocab_size, cfg.branching
        rng = np.random.default_rng(cfg.seed)
        self.vocab: list[str] = _make_vocab(V, rng)
        self.word_index: dict[str, int] = {w: i for i, w in enumerate(self.vocab)}
        self.p_end_sentence = 1.0 / cfg.mean_sentence_words
        self.p_end_doc = 1.0 / cfg.mean_doc_sentences
        ranks = np.arange(1, V + 1, dtype=np.float64)
        self.target = ranks ** (-cfg.zipf) / np.sum(ranks ** (-cfg.zipf))  # (V,) start distribution s
        self.start_cdf = np.cumsum(self.target)

        # Successor sets: k draws without replacement from the target law, by Gumbel top-k, in row blocks.
        succ = np.empty((V, k), dtype=np.int64)
        logw = np.log(self.target)
        block = max(1, (1 << 21) // V)
        for a in range(0, V, block):
            rows = np.arange(a, min(a + block, V))
            keys = logw[None, :] + rng.gumbel(size=(rows.size, V))
            keys[np.arange(rows.size), rows] = -np.inf  # no self-loops: "the the the" is not language
            succ[a:a + block] = np.argpartition(-keys, k - 1, axis=1)[:, :k]
        succ.sort(axis=1)
        noise = np.exp(_NOISE_SIGMA * rng.standard_normal((V, k)))
        # Transition weights ∝ target weight of the successor × noise × a per-word calibration factor c_j;
        # c is tuned so the stationary law follows the target Zipf law (inclusion in successor sets
        # alone would make rare words rarer still).
        base = self.target[succ] * noise
        c = np.ones(V)
        for _ in range(_CALIBRATION_STEPS):
            self._set_transitions(succ, base * c[succ])
            c *= np.sqrt(self.target / self.stationary_word_distribution())
            c /= c.max()
        self._set_transitions(succ, base * c[succ])

    def _set_transitions(self, succ: np.ndarray, weights: np.ndarray) -> None:
        self.succ = succ  # (V, k) successor word ids
        self.trans = weights / weights.sum(axis=1, keepdims=True)  # (V, k) P(next | word), rows sum to 1
        self.trans_cdf = np.cumsum(self.trans, axis=1)
        self.trans_cdf[:, -1] = 1.0
        self._pi = None
        self._log_trans = None

    # ---------------------------------------------------------------- exact quantities
    def stationary_word_distribution(self) -> np.ndarray:
        """Long-run word frequencies (V,), solved exactly (to float precision), no Monte Carlo.

        The word sequence (across sentences and documents) is a Markov chain with kernel
        ``(1-p_s) P + p_s 1 s^T``; its stationary law solves ``pi = p_s s + (1-p_s) P^T pi``, a contraction
        with rate ``1-p_s``, iterated until the change is below 1e-15.
        """
        if self._pi is None:
            V, ps = self.cfg.vocab_size, self.p_end_sentence
            pi = self.target.copy()
            for _ in range(100_000):
                new = ps * self.target + (1 - ps) * np.bincount(
                    self.succ.ravel(), weights=(pi[:, None] * self.trans).ravel(), minlength=V)
                done = np.abs(new - pi).max() < 1e-15
                pi = new
                if done:
                    break
            self._pi = pi / pi.sum()
        return self._pi


    def stationary_zipf_exponent(self) -> float:
        """Zipf exponent of the stationary law: minus the log-log slope of prob vs rank, top 1000 ranks."""
        p = np.sort(self.stationary_word_distribution())[::-1][:_FIT_TOP_RANKS]
        r = np.arange(1, len(p) + 1)
        return float(-np.polyfit(np.log(r), np.log(p), 1)[0])

    def expected_words_per_doc(self) -> float:
        """Mean document length in words: geometric, 1 / (p_s p_d)."""
        return 1.0 / (self.p_end_sentence * self.p_end_doc)

    def expected_chars_per_doc(self) -> float:
        """Mean characters per document, counting 1 for its end-of-document (EOT).

        Each word costs len(word) + 1 (the following space or period) and each sentence costs 1 more (the
        space before the next sentence, or EOT after the last): chars = Σ len + #words + #sentences.
        """
        lens = np.array([len(w) for w in self.vocab], dtype=np.float64)
        n_words = self.expected_words_per_doc()
        return n_words * float(self.stationary_word_distribution() @ (lens + 1)) + 1.0 / self.p_end_doc

    def entropy_rate_bits_per_char(self) -> float:
        """Exact entropy rate, bits per character (each character and each EOT counts 1).

        Documents are i.i.d. and the text determines the event sequence (words are distinct, separators
        are explicit), so by renewal-reward the rate is E[entropy of one document] / E[chars of one
        document]. A document's entropy is H(s) for its first word plus, after every word i, the entropy
        h_i of the next event: h_i = H_b(p_s) + p_s (H_b(p_d) + (1-p_d) H(s)) + (1-p_s) H(P_i).
        Expected visits to word i per document are N_i = E[words per doc] · pi_i, since document starts
        are regeneration points of the word chain (the next word after a document end is drawn from s,
        and the end is independent of the word). All in nats, converted to bits at the end.
        """
        ps, pd = self.p_end_sentence, self.p_end_doc
        h_s = float(-np.sum(self.target * np.log(self.target)))
        row_h = -np.sum(self.trans * np.log(self.trans), axis=1)  # (V,) nats
        h = _binary_entropy(ps) + ps * (_binary_entropy(pd) + (1 - pd) * h_s) + (1 - ps) * row_h
        nats_per_doc = h_s + self.expected_words_per_doc() * float(self.stationary_word_distribution() @ h)
        return nats_per_doc / self.expected_chars_per_doc() / math.log(2)

    def word_set_mass(self, words) -> float:
        """Stationary probability mass of the given word types (unknown strings contribute 0)."""
        idx = sorted({self.word_index[w] for w in words if w in self.word_index})  # fixed order: reproducible sums
        return float(self.stationary_word_distribution()[idx].sum()) if idx else 0.0

    def is_valid_word(self, w: str) -> bool:
        return w in self.word_index

    def fingerprint(self) -> str:
        """Short stable hash of the config (and of this generator's version)."""
        blob = json.dumps({"synthetic_v": 1, **asdict(self.cfg)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    # ---------------------------------------------------------------- probabilities of text
    def logprob(self, text: str) -> float:
        """Exact log-probability (nats) of one complete document, end-of-document included.

        -inf for text outside the language: empty, bad spacing or punctuation, unknown words, or a
        bigram that the chain never produces.
        """
        if not DOC_RE.fullmatch(text):
            return -math.inf
        self._tables()
        ps, pd, V = self.p_end_sentence, self.p_end_doc, self.cfg.vocab_size
        lp_cont, lp_new_sent, lp_end = math.log1p(-ps), math.log(ps) + math.log1p(-pd), math.log(ps * pd)
        lp = 0.0
        for sentence in text[:-1].split(". "):
            ids = [self.word_index.get(w, -1) for w in sentence.split(" ")]
            if min(ids) < 0:
                return -math.inf
            lp += self._log_start[ids[0]] + lp_new_sent + lp_cont * (len(ids) - 1)
            for a, b in zip(ids, ids[1:]):
                t = self._log_trans.get(a * V + b)
                if t is None:
                    return -math.inf
                lp += t
        return lp - lp_new_sent + lp_end  # the last sentence ends the document instead

    def _tables(self):
        if self._log_trans is None:
            V = self.cfg.vocab_size
            self._log_trans = dict(zip((np.arange(V)[:, None] * V + self.succ).ravel().tolist(),
                                       np.log(self.trans).ravel().tolist()))
            self._log_start = np.log(self.target).tolist()

    def event_logprobs(self, text: str, ended: bool = True) -> list[tuple[float | None, int]]:
        """The text of one sampled document as the language's events, each (nats or None if impossible, characters).

        Events: the first word (start law s; its characters), each later word with the separator before it
        (" ": the sentence goes on, ln(1 − p_s) + ln P(w | previous word); ". ": a new sentence, ln p_s +
        ln(1 − p_d) + ln s(w)), and for an ended document its end (the trailing "." and the EOT: ln p_s + ln p_d).
        An event is impossible (None) when its word is not in the vocabulary, a transition is one the chain never
        makes (or follows an unknown word), or a separator is anything else (double spaces, a missing period).
        Characters of all events add up to len(text) + 1 for an ended document, and for a valid document the nats
        add up to `logprob(text)`. A document cut by the length cap (ended=False) leaves out its last word, which
        may be cut mid-word, and has no end event."""
        self._tables()
        ps, pd, V = self.p_end_sentence, self.p_end_doc, self.cfg.vocab_size
        parts = re.findall(r"[a-z]+|[^a-z]+", text)
        if not ended:
            parts = parts[:-1] if parts and parts[-1][0].isalpha() else parts
            while parts and not parts[-1][0].isalpha():
                parts = parts[:-1]  # the separator before the dropped word: part of no event
        out: list[tuple[float | None, int]] = []
        prev, sep = None, ""  # previous word id (-1 unknown), separator run since it
        for part in parts:
            if not part[0].isalpha():
                sep += part
                continue
            w = self.word_index.get(part, -1)
            if prev is None:  # the document's first word
                lp = self._log_start[w] if w >= 0 and not sep else None
            elif sep == " ":
                t = self._log_trans.get(prev * V + w) if prev >= 0 and w >= 0 else None
                lp = None if t is None else math.log1p(-ps) + t
            elif sep == ". ":
                lp = math.log(ps) + math.log1p(-pd) + self._log_start[w] if w >= 0 else None
            else:
                lp = None
            out.append((lp, len(sep) + len(part)))
            prev, sep = w, ""
        if ended:
            ok = prev is not None and sep == "."
            out.append((math.log(ps * pd) if ok else None, len(sep) + 1))
        return out

    def doc_logprobs(self, docs) -> np.ndarray:
        """Log-probabilities (nats) of many documents, shape (len(docs),)."""
        return np.array([self.logprob(d) for d in docs], dtype=np.float64)

    # ---------------------------------------------------------------- exact next-character law
    def _char_tables(self):
        """Prefix structure, built once: words sorted (a prefix is a contiguous range), their letter codes
        (V, max_len + 1) uint8 with 0 past the end, the start law in sorted order, and successor ranks (V, k)."""
        tab = getattr(self, "_char_tab", None)
        if tab is None:
            order = sorted(range(len(self.vocab)), key=self.vocab.__getitem__)  # sorted position -> word id
            words = [self.vocab[i] for i in order]
            rank = np.empty(len(order), dtype=np.int64)
            rank[order] = np.arange(len(order))
            codes = np.zeros((len(words), max(map(len, words)) + 1), dtype=np.uint8)
            for r, w in enumerate(words):
                codes[r, :len(w)] = np.frombuffer(w.encode("ascii"), dtype=np.uint8)
            tab = self._char_tab = (words, codes, self.target[np.asarray(order)], rank[self.succ], {})
        return tab

    def next_char_logprobs(self, context: str, alphabet: str) -> np.ndarray:
        """Exact next-character log-probabilities (nats) after ``context``, shape (len(alphabet) + 1,).

        ``context`` is the current document so far ("" = document start); entry i is character alphabet[i],
        the last entry is end-of-document (EOT); impossible characters get -inf. The text so far fixes the
        chain's state: the word law ``q`` (the start law ``s`` at a sentence start, else row ``P_prev`` of the
        previous word, which already excludes a self-loop), the partial word ``p``, and whether the last
        character was '.'. With M(x) = Σ_{w starts with x} q(w):
          letter c: M(p + c) / M(p);   ' ': q(p) / M(p) · (1 - p_s);   '.': q(p) / M(p) · p_s;
          after '.': ' ' with 1 - p_d, EOT with p_d.
        So over a document and its EOT the product of these probabilities telescopes to exp(logprob(doc)).
        Masses are summed directly over the prefix's range of sorted words (np.bincount by next letter), never
        as differences of cumulative sums, so rare words keep full relative precision. Characters of the
        language missing from ``alphabet`` keep their mass out of the result (it then sums to < 1).
        By the Markov property only the format, the previous word and the partial word are checked: a context
        in that format with an unknown previous word or a partial word no word starts with raises ValueError.
        """
        if not PREFIX_RE.fullmatch(context):
            raise ValueError(f"context is not the start of a document of the language: {context[-40:]!r}")
        words, codes, start_w, succ_rank, per_alphabet = self._char_tables()
        if alphabet not in per_alphabet:
            # Bin of each alphabet character in the (257,) letter masses; bin 256 is always 0 (no such letter).
            idx = np.array([o if 0 < (o := ord(c)) < 256 else 256 for c in alphabet], dtype=np.int64)
            per_alphabet[alphabet] = (idx, alphabet.find(" "), alphabet.find("."))
        idx, i_space, i_stop = per_alphabet[alphabet]
        prob = np.zeros(len(alphabet) + 1)  # probabilities; the last entry is EOT
        if context.endswith("."):
            if i_space >= 0:
                prob[i_space] = 1.0 - self.p_end_doc
            prob[-1] = self.p_end_doc
        else:
            sp = context.rfind(" ")
            prefix = context[sp + 1:]
            lo = bisect.bisect_left(words, prefix)
            hi = bisect.bisect_left(words, prefix + "\U0010ffff") if prefix else len(words)
            col = min(len(prefix), codes.shape[1] - 1)  # longer prefixes have an empty range anyway
            if sp <= 0 or context[sp - 1] == ".":  # sentence start: the start law s, dense
                letters, weights = codes[lo:hi, col], start_w[lo:hi]
            else:
                prev = self.word_index.get(context[context.rfind(" ", 0, sp) + 1:sp], -1)
                if prev < 0:
                    raise ValueError(f"context has a word outside the vocabulary: {context[-40:]!r}")
                r = succ_rank[prev]  # (k,) sorted positions of the successors
                keep = (r >= lo) & (r < hi)
                letters, weights = codes[r[keep], col], self.trans[prev][keep]
            mass = np.bincount(letters, weights=weights, minlength=257)  # (257,) q-mass by next letter; 0 = word ends
            total = mass.sum()  # M(p)
            if not total > 0:
                raise ValueError(f"context has probability 0 in the language: {context[-40:]!r}")
            prob[:-1] = mass[idx] / total
            ends = mass[0] / total  # q(p) / M(p): the partial word is a complete word that stops here
            if i_space >= 0:
                prob[i_space] += ends * (1.0 - self.p_end_sentence)
            if i_stop >= 0:
                prob[i_stop] += ends * self.p_end_sentence
        with np.errstate(divide="ignore"):
            return np.log(prob)

    # ---------------------------------------------------------------- sampling
    def sample_documents(self, n_docs: int, rng: np.random.Generator) -> list[str]:
        """n_docs i.i.d. documents; all chains step together (one numpy step per word position)."""
        if n_docs <= 0:
            return []
        ps, pd = self.p_end_sentence, self.p_end_doc
        V = self.cfg.vocab_size
        active = np.arange(n_docs)
        cur = np.minimum(np.searchsorted(self.start_cdf, rng.random(n_docs), side="right"), V - 1)
        doc_parts, code_parts = [], []
        while active.size:
            u = rng.random(active.size)
            end_sent = u < ps
            end_doc = end_sent & (rng.random(active.size) < pd)
            kind = end_sent.astype(np.int64) + end_doc  # 0 continue, 1 end sentence, 2 end document
            doc_parts.append(active)
            code_parts.append(cur * 3 + kind)
            # Next word: successor (inverse CDF on the row) or a fresh sentence start.
            v = rng.random(active.size)
            nxt_col = (self.trans_cdf[cur] <= v[:, None]).sum(axis=1)
            nxt = self.succ[cur, np.minimum(nxt_col, self.succ.shape[1] - 1)]
            start = np.minimum(np.searchsorted(self.start_cdf, v, side="right"), V - 1)
            nxt = np.where(end_sent, start, nxt)
            keep = ~end_doc
            active, cur = active[keep], nxt[keep]
        docs_of = np.concatenate(doc_parts)
        order = np.argsort(docs_of, kind="stable")  # doc-major, word order kept
        codes = np.concatenate(code_parts)[order]
        bounds = np.concatenate([[0], np.cumsum(np.bincount(docs_of, minlength=n_docs))])
        pieces = [s for w in self.vocab for s in (w + " ", w + ". ", w + ".")]
        toks = [pieces[c] for c in codes.tolist()]
        return ["".join(toks[bounds[i]:bounds[i + 1]]) for i in range(n_docs)]

    def sample_chars(self, n_chars: int, rng: np.random.Generator) -> list[str]:
        """Documents until their characters (len + 1 per document, for EOT) reach n_chars; last kept whole."""
        docs: list[str] = []
        total = 0
        per_doc = self.expected_chars_per_doc()
        while total < n_chars:
            batch = self.sample_documents(max(16, int(1.1 * (n_chars - total) / per_doc) + 1), rng)
            sizes = np.cumsum([len(d) + 1 for d in batch]) + total
            stop = int(np.searchsorted(sizes, n_chars, side="left"))  # first index reaching n_chars
            take = batch[:stop + 1]
            docs.extend(take)
            total = int(sizes[len(take) - 1])
        return docs

    def write_corpus(self, path, n_chars: int, seed: int) -> None:
        """Write sampled documents to a .txt file, separated by blank lines."""
        docs = self.sample_chars(n_chars, np.random.default_rng(seed))
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n\n".join(docs) + "\n")
