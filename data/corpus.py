"""Corpora: where the real text comes from, as a stream of documents with a fixed train/val split.

Sources (one option each; `corpus.kind=auto` picks from the options given):
- `synthetic` (the default, offline): the built-in language of data/synthetic.py. Its train split (for fitting
  the tokenizer and the real-corpus statistics) and its val split are fixed samples drawn from `corpus.split_seed`;
  fresh real data for a generation are new draws, so a synthetic corpus never runs out. Held in memory.
- `text`: a local .txt file or a folder of them (recursively, sorted by path). Documents are separated by blank
  lines, or are whole files (`corpus.doc_split=file`). Read as a stream, 16 MB at a time.
- `table`: a local .jsonl/.json/.csv/.parquet file, one document per row of `corpus.text_column`;
  `hf`: a hub dataset `corpus.hf` (+ `corpus.hf_config`, `corpus.split`). Both through `datasets`
  (data/hfcorpus.py), memory-mapped Arrow, never all in memory as Python strings.

The split is by document: with n documents, a permutation seeded by `corpus.split_seed` puts round(n ·
`corpus.val_fraction`) of them (at least 1, at most n − 1) in val; a boolean mask over document indices, so any
stream of the documents can be split one document at a time. Train documents keep their source order. The val
split never changes and is never trained on. Every corpus has a fingerprint (content hash plus split settings),
recorded in config.json. A corpus with its own held-out split (`corpus.val_path`, or `corpus.val_split` of a hub
dataset, e.g. wikitext-2's test split) uses it as the val split instead: every document of the main source is then
train. Tested in tests/test_corpus.py, tests/test_sources.py and tests/test_hf.py.
"""
from __future__ import annotations

import codecs
import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from data.synthetic import SyntheticConfig, SyntheticLanguage

_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n\s*")
TABLE_EXTS = (".jsonl", ".json", ".csv", ".parquet")
_CHUNK = 1 << 24  # bytes read at a time from a text file
_MAX_DOC = 1 << 28  # characters: a longer "document" means the file has no blank lines to split on


def default_cache_dir() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "closedloop")


@dataclass
class CorpusConfig:
    kind: str = field(default="auto", metadata={"help": "auto (hf if corpus.hf is set, else text/table if corpus.path is set, else synthetic) | synthetic | text | table | hf"})
    path: str = field(default="", metadata={"help": "local corpus: a .txt file, a folder of .txt files, or a .jsonl/.json/.csv/.parquet file"})
    text_column: str = field(default="text", metadata={"help": "column holding the text (one document per row) of a table file or hub dataset"})
    hf: str = field(default="", metadata={"help": "hub dataset id loaded through `datasets` and cached, e.g. roneneldan/TinyStories"})
    hf_config: str = field(default="", metadata={"help": "hub dataset config name, e.g. wikitext-2-raw-v1 ('' = none)"})
    split: str = field(default="train", metadata={"help": "split of the hub dataset (a table file has only 'train'); our own train/val split is taken inside it"})
    doc_split: str = field(default="blank_lines", metadata={"help": "documents of .txt files are separated by blank_lines | one per file"})
    val_fraction: float = field(default=0.1, metadata={"help": "share of documents held out as the fixed real val split (unless corpus.val_path or corpus.val_split names a held-out split)"})
    val_path: str = field(default="", metadata={"help": "the corpus's own held-out split, a local .txt file or folder or a table file: the fixed val split, all of the main source then being train"})
    val_split: str = field(default="", metadata={"help": "hub dataset: its split used as the fixed val split, e.g. test or validation (all of corpus.split then being train)"})
    split_seed: int = field(default=0, metadata={"help": "seed of the train/val split (and of the synthetic splits)"})
    encoding_errors: str = field(default="strict", metadata={"help": "non-UTF-8 bytes: strict (refuse) | replace (with U+FFFD)"})
    cache_dir: str = field(default="", metadata={"help": "token cache (memory-mapped ids) and hub downloads ('' = $XDG_CACHE_HOME/closedloop or ~/.cache/closedloop)"})
    stats_chars: int = field(default=5_000_000, metadata={"help": "real-corpus word statistics (novel words, coverage, KL) use the first this many characters of train (and of val)"})
    synthetic_train_chars: int = field(default=1_000_000, metadata={"help": "synthetic train split size, characters (tokenizer fit + corpus statistics)"})
    synthetic_val_chars: int = field(default=100_000, metadata={"help": "synthetic val split size, characters"})
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    def __post_init__(self):
        if self.kind not in ("auto", "synthetic", "text", "table", "hf"):
            raise ValueError(f"corpus.kind must be auto, synthetic, text, table or hf, got {self.kind!r}")
        if self.doc_split not in ("blank_lines", "file"):
            raise ValueError(f"corpus.doc_split must be blank_lines or file, got {self.doc_split!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"corpus.val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.encoding_errors not in ("strict", "replace"):
            raise ValueError(f"corpus.encoding_errors must be strict or replace, got {self.encoding_errors!r}")
        if self.synthetic_train_chars < 1000 or self.synthetic_val_chars < 1000:
            raise ValueError("corpus.synthetic_train_chars and corpus.synthetic_val_chars must be >= 1000")
        if self.stats_chars < 1000:
            raise ValueError(f"corpus.stats_chars must be >= 1000, got {self.stats_chars}")
        if not self.text_column:
            raise ValueError("corpus.text_column must not be empty")
        if self.hf and self.path:
            raise ValueError("pass either --corpus.hf=ID or --corpus.path=FILE, not both")
        if self.val_path and self.val_split:
            raise ValueError("pass either --corpus.val_path=FILE or --corpus.val_split=NAME, not both")
        if self.val_split and self.resolved_kind != "hf":
            raise ValueError("corpus.val_split names a split of a hub dataset (--corpus.hf=ID); for a local "
                             "held-out file use --corpus.val_path=FILE")
        if self.val_path and self.resolved_kind == "synthetic":
            raise ValueError("corpus.val_path is a held-out split of a real corpus; the synthetic language has its own")
        if self.val_split and self.val_split == self.split:
            raise ValueError(f"corpus.val_split={self.val_split!r} is the training split corpus.split; name another")

    @property
    def resolved_kind(self) -> str:
        if self.kind != "auto":
            return self.kind
        if self.hf:
            return "hf"
        if self.path:
            return "table" if self.path.lower().endswith(TABLE_EXTS) else "text"
        return "synthetic"

    @property
    def resolved_cache_dir(self) -> str:
        return os.path.expanduser(self.cache_dir) if self.cache_dir else default_cache_dir()


@dataclass
class Corpus:
    """Documents of the real corpus, as a stream. `language` is the ground truth when the corpus is synthetic.

    Finite corpora give `batches()` (all documents in source order, empty ones as "") and `val_mask` (bool per
    document index). The synthetic corpus holds its two splits in memory (`_train`, `_val`).
    """

    name: str
    fingerprint: str
    batches: Callable[[], Iterator[list[str]]] | None = None
    val_mask: np.ndarray | None = None
    language: SyntheticLanguage | None = None
    _train: list[str] | None = None
    _val: list[str] | None = None

    @classmethod
    def from_lists(cls, name: str, fingerprint: str, train_docs: list[str], val_docs: list[str],
                   language: SyntheticLanguage | None = None) -> "Corpus":
        return cls(name=name, fingerprint=fingerprint, language=language, _train=list(train_docs), _val=list(val_docs))

    @property
    def infinite(self) -> bool:
        return self.language is not None

    @property
    def n_docs(self) -> int:
        return len(self.val_mask) if self.val_mask is not None else len(self._train) + len(self._val)

    def iter_split(self, split: str, batch_docs: int = 4096) -> Iterator[list[str]]:
        """Batches of the non-empty documents of `split` ("train" | "val"), in source order."""
        if self._train is not None:
            docs = self._train if split == "train" else self._val
            for i in range(0, len(docs), batch_docs):
                yield docs[i:i + batch_docs]
            return
        for batch, mask in self.iter_masked():
            keep = mask if split == "val" else ~mask
            out = [d for d, k in zip(batch, keep.tolist()) if k and d]
            if out:
                yield out

    def iter_masked(self) -> Iterator[tuple[list[str], np.ndarray]]:
        """(documents, is_val mask) batches over the whole finite corpus, in source order."""
        i = 0
        for batch in self.batches():
            yield batch, self.val_mask[i:i + len(batch)]
            i += len(batch)

    def iter_docs(self, split: str, max_chars: int = 0) -> Iterator[str]:
        """Documents of `split` in order; with max_chars > 0, stop once they hold that many characters."""
        have = 0
        for batch in self.iter_split(split):
            for d in batch:
                yield d
                have += len(d) + 1
                if max_chars and have >= max_chars:
                    return

    @property
    def train_docs(self) -> list[str]:
        """All train documents as a list: for small corpora and tests (a large corpus is read with iter_split)."""
        return list(self.iter_docs("train"))

    @property
    def val_docs(self) -> list[str]:
        return list(self.iter_docs("val"))

    def fresh_docs(self, n_chars: int, rng: np.random.Generator) -> list[str]:
        """New real documents (synthetic only): at least n_chars characters, counting one per separator."""
        if self.language is None:
            raise RuntimeError("a finite corpus has no fresh draws; take unused train documents instead")
        return self.language.sample_chars(n_chars, rng)


def load_corpus(cfg: CorpusConfig) -> Corpus:
    """Build the configured corpus; bad input raises ValueError/FileNotFoundError with one clear line."""
    kind = cfg.resolved_kind
    if kind == "synthetic":
        return _synthetic_corpus(cfg)
    held_out = None
    if cfg.val_path:  # a local held-out file, read like a corpus.path of its kind
        vcfg = dataclasses.replace(cfg, path=cfg.val_path, hf="", kind="auto", split="train", val_path="", val_split="")
        held_out = _source(vcfg, vcfg.resolved_kind)
    elif cfg.val_split:
        from data.hfcorpus import hub_source

        held_out = hub_source(cfg, cfg.val_split)
    return _finite(cfg, *_source(cfg, kind), held_out=held_out)


def _source(cfg: CorpusConfig, kind: str):
    """(name, content hash, batches, number of documents or None, where) of a finite source."""
    if kind == "hf":
        if not cfg.hf:
            raise ValueError("corpus.kind=hf needs --corpus.hf=DATASET_ID")
        from data.hfcorpus import hub_source

        return hub_source(cfg)
    if not cfg.path:
        raise ValueError(f"corpus.kind={kind} needs --corpus.path=FILE_OR_DIR")
    if kind == "table":
        from data.hfcorpus import table_source

        return table_source(cfg)
    return _text_source(cfg)


def _synthetic_corpus(cfg: CorpusConfig) -> Corpus:
    lang = SyntheticLanguage(cfg.synthetic)
    # Train and val splits come from two independent streams of the split seed, so they never move.
    ss = np.random.SeedSequence([cfg.split_seed, 0x5EED])
    train_rng, val_rng = (np.random.default_rng(s) for s in ss.spawn(2))
    train = lang.sample_chars(cfg.synthetic_train_chars, train_rng)
    val = lang.sample_chars(cfg.synthetic_val_chars, val_rng)
    fp = _hash(f"synthetic:{lang.fingerprint()}:{cfg.split_seed}:{cfg.synthetic_train_chars}:{cfg.synthetic_val_chars}")
    return Corpus.from_lists("synthetic", fp, train, val, language=lang)


def split_mask(n_docs: int, val_fraction: float, seed: int) -> np.ndarray:
    """is_val per document index: round(n·f) documents (at least 1, at most n − 1) chosen by a seeded permutation."""
    perm = np.random.default_rng([seed, 0x5917]).permutation(n_docs)
    n_val = min(max(1, int(round(val_fraction * n_docs))), n_docs - 1)
    mask = np.zeros(n_docs, dtype=bool)
    mask[perm[:n_val]] = True
    return mask


def _finite(cfg: CorpusConfig, name: str, content_hash: str, batches, n_docs: int | None, where: str,
            held_out=None) -> Corpus:
    """A finite corpus from a source: count its documents (once per content, cached) and split them. With a
    held-out source (a tuple like the main source's), every main document is train and every held-out one val:
    the two are read as one stream, the main source first."""
    fp = _hash(f"{content_hash}:{cfg.doc_split}:{cfg.split_seed}:{cfg.val_fraction}:{cfg.encoding_errors}")
    if n_docs is None:
        n_docs = _cached_count(cfg.resolved_cache_dir, f"{content_hash}:{cfg.doc_split}:{cfg.encoding_errors}", batches)
    if n_docs == 0:
        raise ValueError(f"{where} holds no text (empty)")
    if held_out is not None:
        _, val_hash, val_batches, n_val, val_where = held_out
        if n_val is None:
            n_val = _cached_count(cfg.resolved_cache_dir, f"{val_hash}:{cfg.doc_split}:{cfg.encoding_errors}",
                                  val_batches)
        if n_val == 0:
            raise ValueError(f"{val_where} (the held-out split) holds no text (empty)")

        def both() -> Iterator[list[str]]:
            yield from batches()
            yield from val_batches()

        fp = _hash(f"{content_hash}:{val_hash}:held-out:{cfg.doc_split}:{cfg.encoding_errors}")
        mask = np.concatenate([np.zeros(n_docs, dtype=bool), np.ones(n_val, dtype=bool)])
        return Corpus(name=name, fingerprint=fp, batches=both, val_mask=mask)
    if n_docs < 2:
        raise ValueError(
            f"{where} holds a single document, too few for the val split (the train/val split is by document); "
            "separate documents by blank lines or use a folder with --corpus.doc_split=file"
        )
    return Corpus(name=name, fingerprint=fp, batches=batches, val_mask=split_mask(n_docs, cfg.val_fraction, cfg.split_seed))


def _cached_count(cache_dir: str, key: str, batches) -> int:
    """Number of non-empty documents; counted by one pass and remembered under the cache folder."""
    path = os.path.join(cache_dir, "counts", _hash(key) + ".json")
    try:
        with open(path) as f:
            return int(json.load(f)["n_docs"])
    except (OSError, ValueError, KeyError):
        pass
    n = sum(len(b) for b in batches())
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + f".{os.getpid()}", "w") as f:
            json.dump({"n_docs": n}, f)
        os.replace(path + f".{os.getpid()}", path)
    except OSError:
        pass  # a read-only cache only costs a recount next time
    return n


# --- local text files ------------------------------------------------------------------------------------
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


def file_hash(paths: list[str], root: str) -> str:
    """sha256 of the files' relative names and bytes, read 16 MB at a time."""
    h = hashlib.sha256()
    for p in paths:
        h.update(os.path.relpath(p, root).encode() + b"\0")
        with open(p, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def read_text(path: str, errors: str) -> str:
    """Read one whole file as UTF-8; refuse binary content and (unless errors=replace) invalid UTF-8."""
    return "".join(_decoded_chunks(path, errors))


def _decoded_chunks(path: str, errors: str) -> Iterator[str]:
    """A file as UTF-8 text, 16 MB at a time; binary files (NUL bytes at the start) are refused."""
    dec = codecs.getincrementaldecoder("utf-8")(errors=errors)
    offset = 0
    with open(path, "rb") as f:
        while True:
            raw = f.read(_CHUNK)
            if offset == 0 and b"\x00" in raw[:1 << 20]:
                raise ValueError(f"{path} looks binary (it contains NUL bytes); pass a text file")
            try:
                text = dec.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                raise ValueError(f"{path} is not valid UTF-8 (byte {offset + max(e.start, 0)}); "
                                 "pass --corpus.encoding_errors=replace to replace bad bytes") from None
            offset += len(raw)
            if text:
                yield text
            if not raw:
                return


def split_documents(text: str) -> list[str]:
    """Documents are separated by one or more blank lines; surrounding whitespace is dropped."""
    return [d for d in (p.strip() for p in _BLANK_LINES.split(text.replace("\r\n", "\n"))) if d]


def _stream_documents(path: str, errors: str) -> Iterator[str]:
    """split_documents over a file of any size: a chunk's unfinished last document is carried to the next."""
    carry = ""
    for text in _decoded_chunks(path, errors):
        parts = _BLANK_LINES.split(carry + text)
        carry = parts.pop()
        if len(carry) > _MAX_DOC:
            raise ValueError(f"{path} has a document of more than {_MAX_DOC} characters; separate documents by blank lines")
        for p in parts:
            d = p.replace("\r\n", "\n").strip()
            if d:
                yield d
    d = carry.replace("\r\n", "\n").strip()
    if d:
        yield d


def _text_source(cfg: CorpusConfig):
    files = _list_files(cfg.path)
    root = cfg.path if os.path.isdir(cfg.path) else os.path.dirname(cfg.path) or "."
    content = f"text:{file_hash(files, root)}"

    def docs() -> Iterator[str]:
        for p in files:
            if cfg.doc_split == "file":
                d = read_text(p, cfg.encoding_errors).strip()
                if d:
                    yield d
            else:
                yield from _stream_documents(p, cfg.encoding_errors)

    def batches(size: int = 4096) -> Iterator[list[str]]:
        return batched(docs(), size)

    name = os.path.splitext(os.path.basename(os.path.normpath(cfg.path)))[0]
    return name, content, batches, None, f"corpus.path {cfg.path!r}"


def _hash(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()[:16]


def batched(items: Iterable[str], size: int) -> Iterator[list[str]]:
    """Lists of up to `size` consecutive items (documents are streamed, never all held at once)."""
    batch = []
    for d in items:
        batch.append(d)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
