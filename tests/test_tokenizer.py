"""Tests for data/tokenizer.py: the char tokenizer's encode/decode, EOT framing, unknown policy, save/load.
(BPE and pretrained tokenizers: tests/test_sources.py.)

Run: python -m pytest tests/test_tokenizer.py -q
"""
from __future__ import annotations

import numpy as np
import pytest

from data.tokenizer import CharTokenizer, TokenizerConfig, build_tokenizer, load_tokenizer

DOCS = ["the cat sat.", "a dog ran. the end.", "zebra"]


def test_fit_encode_decode_round_trip():
    tok = CharTokenizer.fit(DOCS)
    for d in DOCS:
        ids = tok.encode(d)
        assert ids.dtype == np.int32 and len(ids) == len(d)
        assert tok.decode(ids) == d
    # Alphabet is sorted and ids are dense: chars, then EOT, then UNK.
    assert tok.chars == "".join(sorted(set("".join(DOCS))))
    assert tok.eot_id == len(tok.chars)
    assert tok.unk_id == tok.eot_id + 1 and tok.vocab_size == len(tok.chars) + 2
    assert tok.encode("").shape == (0,)


def test_fitted_only_on_given_docs():
    tok = CharTokenizer.fit(["abc", "cab"])
    assert tok.chars == "abc"
    assert tok.vocab_size == 5  # a, b, c, EOT, UNK
    assert tok.encode("x").tolist() == [tok.unk_id]
    with pytest.raises(ValueError):
        CharTokenizer.fit(["", ""])


def test_encode_docs_puts_eot_after_each_document():
    tok = CharTokenizer.fit(DOCS)
    ids = tok.encode_docs(DOCS)
    assert len(ids) == sum(len(d) + 1 for d in DOCS)
    eots = np.flatnonzero(ids == tok.eot_id)
    assert eots.tolist() == (np.cumsum([len(d) + 1 for d in DOCS]) - 1).tolist()
    assert ids[-1] == tok.eot_id
    assert tok.encode_docs([]).shape == (0,)
    # An empty document still gets its EOT.
    assert tok.encode_docs(["", "a"]).tolist() == [tok.eot_id, tok.encode("a")[0], tok.eot_id]


def test_split_docs_and_decode_docs():
    tok = CharTokenizer.fit(DOCS)
    ids = tok.encode_docs(DOCS)
    assert tok.decode_docs(ids) == DOCS
    parts = tok.split_docs(ids)
    assert [p.tolist() for p in parts] == [tok.encode(d).tolist() for d in DOCS]
    # A trailing partial document (no EOT yet) is kept.
    partial = np.concatenate([ids, tok.encode("the")])
    assert tok.decode_docs(partial) == DOCS + ["the"]
    # decode renders EOT as the blank-line separator.
    assert tok.decode(tok.encode_docs(["ab", "c"])) == "ab\n\nc\n\n"


def test_unknown_policy_replace_vs_error():
    rep = CharTokenizer.fit(["abc"], unknown="replace")
    ids = rep.encode("aXb\u00e9")
    assert ids.tolist() == [rep.encode("a")[0], rep.unk_id, rep.encode("b")[0], rep.unk_id]
    assert rep.decode(ids) == "a\ufffdb\ufffd"
    err = CharTokenizer.fit(["abc"], unknown="error")
    assert err.unk_id == -1 and err.vocab_size == 4
    assert err.encode("cab").tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="tokenizer.unknown=replace"):
        err.encode("abX")
    with pytest.raises(ValueError):
        err.encode_docs(["ab", "\u4e2d"])


def test_char_count_counts_chars_and_eots():
    tok = CharTokenizer.fit(DOCS)
    ids = tok.encode_docs(DOCS)
    assert tok.char_count(ids) == sum(len(d) for d in DOCS) + len(DOCS)
    assert tok.char_count(tok.encode("aXa")) == 3  # UNK counts as one character
    assert tok.char_count([]) == 0


def test_non_ascii_characters():
    docs = ["héllo wörld", "日本語のテキスト", "emoji 🙂 ok", "ñ"]
    tok = CharTokenizer.fit(docs)
    ids = tok.encode_docs(docs)
    assert tok.decode_docs(ids) == docs
    assert len(tok.encode("🙂")) == 1  # one code point, one id (not UTF-8/UTF-16 units)
    # A code point above every fitted one maps to UNK rather than indexing out of range.
    assert tok.encode("\U0001F680").tolist() == [tok.unk_id]


def test_save_load_round_trip(tmp_path):
    docs = DOCS + ["ünïcode 🙂"]
    for policy in ("replace", "error"):
        tok = CharTokenizer.fit(docs, unknown=policy)
        path = str(tmp_path / f"tok_{policy}.json")
        tok.save(path)
        back = load_tokenizer(path)
        assert back.chars == tok.chars and back.unknown == policy
        assert (back.eot_id, back.unk_id, back.vocab_size) == (tok.eot_id, tok.unk_id, tok.vocab_size)
        np.testing.assert_array_equal(back.encode_docs(docs), tok.encode_docs(docs))
        if policy == "replace":
            np.testing.assert_array_equal(back.encode("Q?"), tok.encode("Q?"))


def test_load_rejects_other_kinds(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"kind": "bpe", "chars": "ab", "unknown": "replace"}')
    with pytest.raises(ValueError, match="not a char tokenizer"):
        CharTokenizer.load(str(p))


def test_config_validation_and_build():
    with pytest.raises(ValueError, match="tokenizer.kind"):
        TokenizerConfig(kind="wordpiece")
    with pytest.raises(ValueError, match="tokenizer.vocab_size"):
        TokenizerConfig(kind="bpe", vocab_size=100)
    with pytest.raises(ValueError, match="tokenizer.name"):
        TokenizerConfig(kind="pretrained")
    with pytest.raises(ValueError, match="tokenizer.unknown"):
        TokenizerConfig(unknown="ignore")
    tok = build_tokenizer(TokenizerConfig(unknown="error"), ["xy", "yz"])
    assert tok.chars == "xyz" and tok.unk_id == -1
