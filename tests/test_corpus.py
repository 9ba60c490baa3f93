"""Tests for data/corpus.py: synthetic and text corpora, the fixed train/val split, fingerprints, bad inputs.

Run: python -m pytest tests/test_corpus.py -q
"""
from __future__ import annotations

import numpy as np
import pytest

from data.corpus import CorpusConfig, load_corpus, split_documents
from data.synthetic import SyntheticConfig

SMALL = dict(synthetic_train_chars=2000, synthetic_val_chars=1000, synthetic=SyntheticConfig(vocab_size=50, branching=5))


def _docs(n: int) -> list[str]:
    return [f"document number {i} says hello.\nsecond line of {i}." for i in range(n)]


def _write(path, docs, sep="\n\n"):
    path.write_text(sep.join(docs) + "\n", encoding="utf-8")
    return str(path)


def test_synthetic_corpus_is_deterministic():
    a, b = load_corpus(CorpusConfig(**SMALL)), load_corpus(CorpusConfig(**SMALL))
    assert a.train_docs == b.train_docs and a.val_docs == b.val_docs
    assert a.fingerprint == b.fingerprint
    assert a.infinite and a.name == "synthetic"
    assert sum(len(d) + 1 for d in a.train_docs) >= 2000
    assert sum(len(d) + 1 for d in a.val_docs) >= 1000
    assert a.train_docs[: len(a.val_docs)] != a.val_docs  # independent streams
    c = load_corpus(CorpusConfig(**{**SMALL, "split_seed": 1}))
    assert c.train_docs != a.train_docs and c.fingerprint != a.fingerprint


def test_synthetic_fresh_docs_follow_the_rng():
    c = load_corpus(CorpusConfig(**SMALL))
    x = c.fresh_docs(500, np.random.default_rng(5))
    assert x == c.fresh_docs(500, np.random.default_rng(5))
    assert x != c.fresh_docs(500, np.random.default_rng(6))
    assert sum(len(d) + 1 for d in x) >= 500


def test_text_file_split_on_blank_lines(tmp_path):
    docs = _docs(20)
    # Blank lines of varying shape (spaces, CRLF, several in a row) all separate documents.
    text = docs[0] + "\n \n" + docs[1] + "\r\n\r\n" + docs[2] + "\n\n\n\n" + "\n\n".join(docs[3:]) + "\n"
    p = tmp_path / "corpus.txt"
    p.write_text(text, encoding="utf-8", newline="")
    c = load_corpus(CorpusConfig(path=str(p), val_fraction=0.2))
    assert not c.infinite and c.name == "corpus"
    assert sorted(c.train_docs + c.val_docs) == sorted(docs)
    assert len(c.val_docs) == 4 and len(c.train_docs) == 16
    assert split_documents("a\nb\n\n  \n\nc  \n") == ["a\nb", "c"]
    with pytest.raises(RuntimeError):
        c.fresh_docs(10, np.random.default_rng(0))


def test_folder_with_doc_split_file(tmp_path):
    d = tmp_path / "texts"
    (d / "sub").mkdir(parents=True)
    contents = {}
    for i in range(6):
        sub = d / "sub" if i % 2 else d
        body = f"file {i}\n\nstill file {i}"  # blank lines inside a file do not split it
        (sub / f"f{i}.txt").write_text(body, encoding="utf-8")
        contents[i] = body
    (d / "ignored.md").write_text("not a txt file", encoding="utf-8")
    c = load_corpus(CorpusConfig(path=str(d), doc_split="file", val_fraction=0.3))
    assert sorted(c.train_docs + c.val_docs) == sorted(contents.values())
    assert len(c.val_docs) == 2
    # With blank-line splitting the same folder gives two documents per file.
    c2 = load_corpus(CorpusConfig(path=str(d), doc_split="blank_lines"))
    assert len(c2.train_docs) + len(c2.val_docs) == 12


def test_split_is_stable_disjoint_and_seeded(tmp_path):
    p = _write(tmp_path / "c.txt", _docs(40))
    a = load_corpus(CorpusConfig(path=p, val_fraction=0.25))
    b = load_corpus(CorpusConfig(path=p, val_fraction=0.25))
    assert a.train_docs == b.train_docs and a.val_docs == b.val_docs and a.fingerprint == b.fingerprint
    assert not set(a.train_docs) & set(a.val_docs)
    assert len(a.val_docs) == 10
    other = load_corpus(CorpusConfig(path=p, val_fraction=0.25, split_seed=1))
    assert set(other.val_docs) != set(a.val_docs)
    assert other.fingerprint != a.fingerprint


def test_fingerprint_changes_with_content(tmp_path):
    path = tmp_path / "c.txt"
    docs = _docs(10)
    fp1 = load_corpus(CorpusConfig(path=_write(path, docs))).fingerprint
    docs[3] = docs[3].replace("hello", "goodbye")
    fp2 = load_corpus(CorpusConfig(path=_write(path, docs))).fingerprint
    assert fp1 != fp2


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus(CorpusConfig(path=str(tmp_path / "nope.txt")))


def test_empty_file(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_text("  \n\n \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        load_corpus(CorpusConfig(path=str(p)))


def test_binary_file(tmp_path):
    p = tmp_path / "bin.txt"
    p.write_bytes(b"hello\n\nworld\x00\x01\x02")
    with pytest.raises(ValueError, match="binary"):
        load_corpus(CorpusConfig(path=str(p)))


def test_non_utf8_bytes_strict_and_replace(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("caf\u00e9 one\n\nna\u00efve two\n\nthree".encode("latin-1"))
    with pytest.raises(ValueError, match="not valid UTF-8.*encoding_errors=replace"):
        load_corpus(CorpusConfig(path=str(p)))
    c = load_corpus(CorpusConfig(path=str(p), encoding_errors="replace"))
    all_docs = c.train_docs + c.val_docs
    assert len(all_docs) == 3
    assert any("caf\ufffd" in d for d in all_docs)


def test_folder_without_txt(tmp_path):
    (tmp_path / "a.md").write_text("hello", encoding="utf-8")
    with pytest.raises(ValueError, match="no .txt"):
        load_corpus(CorpusConfig(path=str(tmp_path)))


def test_single_document_file(tmp_path):
    p = tmp_path / "one.txt"
    p.write_text("just one document\nacross two lines\n", encoding="utf-8")
    with pytest.raises(ValueError, match="single document"):
        load_corpus(CorpusConfig(path=str(p)))


def test_text_kind_without_path():
    with pytest.raises(ValueError, match="corpus.path"):
        load_corpus(CorpusConfig(kind="text"))


@pytest.mark.parametrize("kw,option", [
    ({"kind": "web"}, "corpus.kind"),
    ({"doc_split": "lines"}, "corpus.doc_split"),
    ({"val_fraction": 0.0}, "corpus.val_fraction"),
    ({"val_fraction": 1.0}, "corpus.val_fraction"),
    ({"encoding_errors": "ignore"}, "corpus.encoding_errors"),
    ({"synthetic_train_chars": 10}, "corpus.synthetic_train_chars"),
])
def test_config_validation_names_option(kw, option):
    with pytest.raises(ValueError, match=option):
        CorpusConfig(**kw)


def test_auto_kind_resolution():
    assert CorpusConfig().resolved_kind == "synthetic"
    assert CorpusConfig(path="x.txt").resolved_kind == "text"
    assert CorpusConfig(kind="synthetic", path="x.txt").resolved_kind == "synthetic"


def test_held_out_val_path_is_the_val_split(tmp_path):
    """corpus.val_path: every document of corpus.path is train, every document of the held-out file val."""
    train = [f"train doc {i}." for i in range(7)]
    held = [f"held-out doc {i}." for i in range(3)]
    (tmp_path / "train.txt").write_text("\n\n".join(train), encoding="utf-8")
    (tmp_path / "test.txt").write_text("\n\n".join(held), encoding="utf-8")
    cfg = CorpusConfig(path=str(tmp_path / "train.txt"), val_path=str(tmp_path / "test.txt"),
                       cache_dir=str(tmp_path / "cache"))
    c = load_corpus(cfg)
    assert c.train_docs == train and c.val_docs == held
    plain = load_corpus(CorpusConfig(path=str(tmp_path / "train.txt"), cache_dir=str(tmp_path / "cache")))
    assert plain.fingerprint != c.fingerprint and len(plain.val_docs) == 1
    with pytest.raises(ValueError, match="corpus.val_split names a split of a hub dataset"):
        CorpusConfig(path="x.txt", val_split="test")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_corpus(CorpusConfig(path=str(tmp_path / "train.txt"), val_path=str(tmp_path / "none.txt")))
