"""Tokenizers: text documents <-> token-id streams, fitted on the real train split once and then frozen.

Three kinds behind one interface (`vocab_size`, `eot_id`, `encode`, `encode_docs`, `decode`, `split_docs`,
`decode_docs`, `char_count`, `fingerprint`, `save`; `build_tokenizer(cfg, train_docs)`, `load_tokenizer(path)`):
- `char` (here): one id per character seen in the real train split, plus an end-of-document id (EOT), which also
  serves as the prompt that starts every sampled document. Characters absent from the train split follow an
  explicit policy (`tokenizer.unknown`): `error` refuses the text, `replace` maps them to a reserved UNK id.
- `bpe` (data/subword.py): byte-level BPE trained with `tokenizers` on the real train split only.
- `pretrained` (data/subword.py): a tokenizer from a local folder or hub name through `transformers`.
A token stream is a 1-D integer array in which every document is followed by EOT. For bits per character,
`char_count(ids)` gives the characters the ids cover: each character counts 1 and each EOT counts 1 (it stands for
the document separator); for the char tokenizer that is `len(ids)`. The tokenizer is saved as tokenizer.json in
the run directory (plus a folder of files for a pretrained one) and reloaded, never refitted, on resume.
Tested in tests/test_tokenizer.py and tests/test_sources.py.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

_EOT = "<|eot|>"
_UNK = "<|unk|>"


@dataclass
class TokenizerConfig:
    kind: str = field(default="auto", metadata={"help": "auto (char for model.kind=gpt; for model.kind=hf the model's own: pretrained, named model.name) | char (one id per character seen in real train) | bpe (byte-level BPE trained on real train) | pretrained (tokenizer.name)"})
    unknown: str = field(
        default="auto",
        metadata={"help": "char: characters absent from real train: replace (with an UNK id) | error | auto "
                          "(error for the synthetic language's closed alphabet, replace for text corpora)"},
    )
    vocab_size: int = field(default=2048, metadata={"help": "bpe: vocabulary size, tokens (256 bytes + EOT + merges)"})
    name: str = field(default="", metadata={"help": "pretrained: a local folder or a hub name (e.g. gpt2) loaded with transformers.AutoTokenizer"})
    fit_chars: int = field(default=100_000_000, metadata={"help": "char/bpe are fitted on the first this many characters of real train (0 = all of it)"})

    def __post_init__(self):
        if self.kind not in ("auto", "char", "bpe", "pretrained"):
            raise ValueError(f"tokenizer.kind must be auto, char, bpe or pretrained, got {self.kind!r}")
        if self.unknown not in ("auto", "replace", "error"):
            raise ValueError(f"tokenizer.unknown must be auto, replace or error, got {self.unknown!r}")
        if self.vocab_size < 260 or self.vocab_size > 1 << 20:
            raise ValueError(f"tokenizer.vocab_size must be in [260, 2^20] (256 bytes + EOT + merges), got {self.vocab_size}")
        if self.kind == "pretrained" and not self.name:
            raise ValueError("tokenizer.kind=pretrained needs --tokenizer.name=PATH_OR_ID")
        if self.fit_chars < 0:
            raise ValueError(f"tokenizer.fit_chars must be >= 0, got {self.fit_chars}")


class StreamTokenizer:
    """What every tokenizer shares: documents <-> streams with EOT after each document."""

    eot_id: int

    def split_docs(self, ids) -> list[np.ndarray]:
        """A stream -> list of documents' ids (EOT removed); a trailing partial document is kept."""
        ids = np.asarray(ids)
        cuts = np.flatnonzero(ids == self.eot_id)
        docs, start = [], 0
        for c in cuts.tolist():
            docs.append(ids[start:c])
            start = c + 1
        if start < len(ids):
            docs.append(ids[start:])
        return docs

    def decode_docs(self, ids) -> list[str]:
        return [self.decode(d) for d in self.split_docs(ids)]

    def decode(self, ids) -> str:
        """ids -> text; each EOT is rendered as the blank-line document separator."""
        ids = np.asarray(ids, dtype=np.int64)
        cuts = np.flatnonzero(ids == self.eot_id)
        parts = np.split(ids, cuts)
        return "\n\n".join(self.decode_doc(p[1:] if i else p) for i, p in enumerate(parts))

    def decode_doc(self, ids: np.ndarray) -> str:
        raise NotImplementedError

    @property
    def fingerprint(self) -> str:
        """Hash of what the tokenizer maps (its saved form): recorded in config.json, keys the token cache."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]

    def to_json(self) -> dict:
        raise NotImplementedError

    def save(self, path: str) -> None:
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f, ensure_ascii=False, indent=1)
        os.replace(tmp, path)


def stream_from_lists(lists, eot_id: int) -> np.ndarray:
    """Per-document id lists -> one int32 stream with EOT after each document."""
    lens = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    flat = np.fromiter((t for x in lists for t in x), dtype=np.int32, count=int(lens.sum()))
    return np.insert(flat, np.cumsum(lens), eot_id).astype(np.int32, copy=False)


class CharTokenizer(StreamTokenizer):
    """One id per character of the fitted alphabet (sorted), then EOT, then UNK (if policy is replace)."""

    kind = "char"

    def __init__(self, chars: str, unknown: str = "replace"):
        self.chars = "".join(sorted(set(chars)))
        self.unknown = unknown
        self.eot_id = len(self.chars)
        self.unk_id = self.eot_id + 1 if unknown == "replace" else -1
        self.vocab_size = self.eot_id + (2 if unknown == "replace" else 1)
        # Lookup table over code points: text -> ids by one numpy gather (≈ 100+ MB/s), -1 = unseen.
        self._max_cp = max((ord(c) for c in self.chars), default=0)
        self._lut = np.full(self._max_cp + 2, -1, dtype=np.int32)
        for i, c in enumerate(self.chars):
            self._lut[ord(c)] = i

    @classmethod
    def fit(cls, docs: Iterable[str], unknown: str = "replace") -> "CharTokenizer":
        seen: set[str] = set()
        for d in docs:
            seen.update(d)
        if not seen:
            raise ValueError("the real train split has no characters to fit a tokenizer on")
        return cls("".join(seen), unknown)

    # --- encoding ---------------------------------------------------------------------------------------
    def encode(self, text: str) -> np.ndarray:
        """One document's text -> ids (int32), without EOT."""
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = self._lut[np.minimum(cps, self._max_cp + 1)]
        if (ids < 0).any():
            if self.unk_id < 0:
                bad = sorted({chr(c) for c in cps[ids < 0]})[:5]
                raise ValueError(
                    f"text contains characters not in the real train split: {bad!r} "
                    "(use --tokenizer.unknown=replace to map them to UNK)"
                )
            ids = np.where(ids < 0, self.unk_id, ids)
        return ids.astype(np.int32, copy=False)

    def encode_docs(self, docs: Iterable[str]) -> np.ndarray:
        """Documents -> one stream (int32) with EOT after each document: one gather over the joined text."""
        docs = list(docs)
        if not docs:
            return np.zeros(0, dtype=np.int32)
        ids = self.encode("".join(docs))
        lens = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
        return np.insert(ids, np.cumsum(lens), self.eot_id).astype(np.int32, copy=False)

    # --- decoding ---------------------------------------------------------------------------------------
    def decode_doc(self, ids) -> str:
        """One document's ids -> text; UNK as U+FFFD."""
        n = len(self.chars)
        return "".join(self.chars[i] if i < n else "\ufffd" for i in np.asarray(ids, dtype=np.int64).tolist())

    def char_count(self, ids) -> int:
        """Characters covered by these ids (each char and each EOT counts 1), for bits per character."""
        return int(np.asarray(ids).size)

    # --- persistence --------------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"kind": self.kind, "chars": self.chars, "unknown": self.unknown,
                "eot": _EOT, "unk": _UNK if self.unk_id >= 0 else None}

    @classmethod
    def load(cls, path: str) -> "CharTokenizer":
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        if d.get("kind") != "char":
            raise ValueError(f"{path}: not a char tokenizer")
        return cls(d["chars"], d["unknown"])


def build_tokenizer(cfg: TokenizerConfig, train_docs: Iterable[str], closed_alphabet: bool = False) -> StreamTokenizer:
    """Fit the configured tokenizer on the real train documents (generation 0 only; frozen afterwards).

    closed_alphabet: the corpus can produce no character outside its train split (the synthetic language), so
    `unknown=auto` adds no UNK id: a model could only ever sample it, never see it in real text.
    """
    if cfg.kind == "bpe":
        from data.subword import BPETokenizer

        return BPETokenizer.train(train_docs, cfg.vocab_size)
    if cfg.kind == "pretrained":
        from data.subword import PretrainedTokenizer

        return PretrainedTokenizer.from_name(cfg.name)
    # kind auto is resolved by the run (training/loop.py: the model's own tokenizer for model.kind=hf); alone it is char
    unknown = cfg.unknown if cfg.unknown != "auto" else ("error" if closed_alphabet else "replace")
    return CharTokenizer.fit(train_docs, unknown)


def load_tokenizer(path: str) -> StreamTokenizer:
    """Reload a tokenizer saved by `save(path)` (tokenizer.json of a run directory), whatever its kind."""
    with open(path, encoding="utf-8") as f:
        kind = json.load(f).get("kind")
    if kind == "char":
        return CharTokenizer.load(path)
    from data.subword import BPETokenizer, PretrainedTokenizer

    if kind == "bpe":
        return BPETokenizer.load(path)
    if kind == "pretrained":
        return PretrainedTokenizer.load(path)
    raise ValueError(f"{path}: unknown tokenizer kind {kind!r}")
