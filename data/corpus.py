"""Corpora: where the real text comes from, split into documents and into a fixed train/val split.

Two sources:
- `synthetic` (the default, offline): the built-in language of data/synthetic.py. Its train split (for fitting
  the tokenizer and the real-corpus statistics) and its val split are fixed samples drawn from `corpus.split_seed`;
  fresh real data for a generation are new draws, so a synthetic corpus never runs out.
- `text`: a local .txt file or a folder of them (recursively, sorted by path). Documents are separated by blank
  lines, or are whole files (`corpus.doc_split=file`). The split is by document, from a seeded permutation.
The val split never changes during a run and is never trained on. Every corpus has a fingerprint (content hash
plus split settings) that is recorded in config.json. Tested in tests/test_corpus.py.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field

import numpy as np

from data.synthetic import SyntheticConfig, SyntheticLanguage

_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n\s*")


@dataclass
class CorpusConfig:
    kind: str = field(default="auto", metadata={"help": "auto (text if corpus.path is set, else synthetic) | synthetic | text"})
    path: str = field(default="", metadata={"help": "a .txt file or a folder of .txt files"})
    doc_split: str = field(default="blank_lines", metadata={"help": "documents are separated by blank_lines | one per file"})
    val_fraction: float = field(default=0.1, metadata={"help": "share of documents held out as the fixed real val split"})
    split_seed: int = field(default=0, metadata={"help": "seed of the train/val split (and of the synthetic splits)"})
    encoding_errors: str = field(default="strict", metadata={"help": "non-UTF-8 bytes: strict (refuse) | replace (with U+FFFD)"})
    synthetic_train_chars: int = field(default=1_000_000, metadata={"help": "synthetic train split size, characters (tokenizer fit + corpus statistics)"})
    synthetic_val_chars: int = field(default=100_000, metadata={"help": "synthetic val split size, characters"})
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __post_init__(self):
        if self.kind not in ("auto", "synthetic", "text"):
            raise ValueError(f"corpus.kind must be auto, synthetic or text, got {self.kind!r}")
        if self.doc_split not in ("blank_lines", "file"):
            raise ValueError(f"corpus.doc_split must be blank_lines or file, got {self.doc_split!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"corpus.val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.encoding_errors not in ("strict", "replace"):
            raise ValueError(f"corpus.encoding_errors must be strict or replace, got {self.encoding_errors!r}")
        if self.synthetic_train_chars < 1000 or self.synthetic_val_chars < 1000:
            raise ValueError("corpus.synthetic_train_chars and corpus.synthetic_val_chars must be >= 1000")

    @property
    def resolved_kind(self) -> str:
        return ("text" if self.path else "synthetic") if self.kind == "auto" else self.kind


@dataclass
class Corpus:
    """Documents of the real corpus. `language` is the ground truth when the corpus is synthetic."""

    name: str
    fingerprint: str
    train_docs: list[str]
    val_docs: list[str]
    language: SyntheticLanguage | None = None

    @property
    def infinite(self) -> bool:
        return self.language is not None

    def fresh_docs(self, n_chars: int, rng: np.random.Generator) -> list[str]:
        """New real documents (synthetic only): at least n_chars characters, counting one per separator."""
        if self.language is None:
            raise RuntimeError("a finite corpus has no fresh draws; take unused train documents instead")
        return self.language.sample_chars(n_chars, rng)


def load_corpus(cfg: CorpusConfig) -> Corpus:
    """Build the configured corpus; bad input raises ValueError/FileNotFoundError with one clear line."""
    if cfg.resolved_kind == "synthetic":
        return _synthetic_corpus(cfg)
    if not cfg.path:
        raise ValueError("corpus.kind=text needs --corpus.path=FILE_OR_DIR")
    return _text_corpus(cfg)


def _synthetic_corpus(cfg: CorpusConfig) -> Corpus:
    lang = SyntheticLanguage(cfg.synthetic)
    # Train and val splits come from two independent streams of the split seed, so they never move.
    ss = np.random.SeedSequence([cfg.split_seed, 0x5EED])
    train_rng, val_rng = (np.random.default_rng(s) for s in ss.spawn(2))
    train = lang.sample_chars(cfg.synthetic_train_chars, train_rng)
    val = lang.sample_chars(cfg.synthetic_val_chars, val_rng)
    fp = _hash(f"synthetic:{lang.fingerprint()}:{cfg.split_seed}:{cfg.synthetic_train_chars}:{cfg.synthetic_val_chars}")
    return Corpus(name="synthetic", fingerprint=fp, train_docs=train, val_docs=val, language=lang)


def _list_files(path: str) -> list[str]:
    if not os.path.exists(path):
        raise FileNotFoundError(f"corpus.path {path!r} does not exist")
    if os.path.isfile(path):
        return [path]
    files = sorted(
        os.path.join(root, f) for root, _, names in os.walk(path) for f in names if f.endswith(".txt")
    )
    if not files:
        raise ValueError(f"corpus.path {path!r} is a folder with no .txt files")
    return files


def read_text(path: str, errors: str) -> str:
    """Read one file as UTF-8; refuse binary content and (unless errors=replace) invalid UTF-8."""
    with open(path, "rb") as f:
        raw = f.read()
    if b"\x00" in raw[:1 << 20]:
        raise ValueError(f"{path} looks binary (it contains NUL bytes); pass a text file")
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path} is not valid UTF-8 (byte {e.start}); pass --corpus.encoding_errors=replace to replace bad bytes"
        ) from None


def split_documents(text: str) -> list[str]:
    """Documents are separated by one or more blank lines; surrounding whitespace is dropped."""
    return [d for d in (p.strip() for p in _BLANK_LINES.split(text.replace("\r\n", "\n"))) if d]


def _text_corpus(cfg: CorpusConfig) -> Corpus:
    files = _list_files(cfg.path)
    docs: list[str] = []
    h = hashlib.sha256()
    for p in files:
        text = read_text(p, cfg.encoding_errors)
        h.update(os.path.relpath(p, cfg.path if os.path.isdir(cfg.path) else os.path.dirname(p) or ".").encode())
        h.update(text.encode("utf-8"))
        if cfg.doc_split == "file":
            if text.strip():
                docs.append(text.strip())
        else:
            docs.extend(split_documents(text))
    if not docs:
        raise ValueError(f"corpus.path {cfg.path!r} holds no text (empty)")
    if len(docs) < 2:
        raise ValueError(
            f"corpus.path {cfg.path!r} holds a single document: the train/val split is by document; "
            "separate documents by blank lines or use a folder with --corpus.doc_split=file"
        )
    perm = np.random.default_rng([cfg.split_seed, 0x5917]).permutation(len(docs))
    n_val = max(1, int(round(cfg.val_fraction * len(docs))))
    n_val = min(n_val, len(docs) - 1)
    val = [docs[i] for i in sorted(perm[:n_val].tolist())]
    train = [docs[i] for i in perm[n_val:].tolist()]  # train in permuted order: `fresh` data consume it in turn
    fp = _hash(f"text:{h.hexdigest()}:{cfg.doc_split}:{cfg.split_seed}:{cfg.val_fraction}:{cfg.encoding_errors}")
    name = os.path.splitext(os.path.basename(os.path.normpath(cfg.path)))[0]
    return Corpus(name=name, fingerprint=fp, train_docs=train, val_docs=val)


def _hash(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()[:16]
