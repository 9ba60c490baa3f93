"""Subword tokenizers behind the interface of data/tokenizer.py: byte-level BPE and pretrained (transformers).

- `BPETokenizer.train(docs, vocab_size)`: byte-level BPE trained with the `tokenizers` library on the real train
  split only; its special token `<|eot|>` ends every document. Saved whole inside the run's tokenizer.json.
- `PretrainedTokenizer.from_name(name)`: `transformers.AutoTokenizer` from a local folder or a hub name; EOT is
  its eos token (one is added when it has none). Its files are saved in `tokenizer_files/` next to tokenizer.json.
  A hub name with no network is not retried: it loads from the cache or fails at once with one line.
Both encode batches of documents in Rust (`encode_batch_fast`, parallel over documents) and never match special
tokens inside the text (a document containing the string "<|eot|>" is encoded as text).

Bits per character: `char_count(ids)` sums a per-token table of the UTF-8 lead bytes (bytes not of the form
10xxxxxx) of each token's bytes, so a character split across two tokens counts exactly once; EOT counts 1 and
other special tokens 0. For a pretrained tokenizer that is not byte-level (SentencePiece style) the table comes
from the token's text ("▁" = a space, "<0xNN>" = one byte): exact up to the word-start marker.
`tokenizers`/`transformers` are imported inside these functions. Tested in tests/test_sources.py.
"""
from __future__ import annotations

import json
import os
import re
from typing import Iterable

import numpy as np

from data.corpus import batched
from data.tokenizer import _EOT, StreamTokenizer, stream_from_lists

_HEX_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet inverted: printable stand-in character -> byte value."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def _lead_bytes(bs: Iterable[int]) -> int:
    return sum(1 for b in bs if (b & 0xC0) != 0x80)


def char_table(tk, eot_id: int, byte_level: bool) -> np.ndarray:
    """Characters per token id (int64): UTF-8 lead bytes of the token's bytes; EOT 1, other specials 0."""
    dec = byte_level_decoder()
    special = {t.content for t in tk.get_added_tokens_decoder().values() if t.special}
    table = np.zeros(tk.get_vocab_size(with_added_tokens=True), dtype=np.int64)
    for tok, i in tk.get_vocab(with_added_tokens=True).items():
        if i >= len(table) or tok in special:
            continue
        if byte_level:
            table[i] = _lead_bytes(dec.get(c, 0x20) for c in tok)
        elif m := _HEX_BYTE.match(tok):
            table[i] = _lead_bytes([int(m.group(1), 16)])
        else:
            table[i] = len(tok.replace("\u2581", " "))
    table[eot_id] = 1
    return table


class _RustTokenizer(StreamTokenizer):
    """Shared by BPE and pretrained: a `tokenizers.Tokenizer` in `self.tk` and a per-token char table."""

    def _setup(self, tk, eot_id: int, byte_level: bool) -> None:
        self.tk, self.eot_id = tk, eot_id
        tk.encode_special_tokens = True  # "<|eot|>" written in a document is text, not a document end
        self.vocab_size = tk.get_vocab_size(with_added_tokens=True)
        self._chars = char_table(tk, eot_id, byte_level)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tk.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def encode_docs(self, docs: Iterable[str]) -> np.ndarray:
        """Documents -> one int32 stream with EOT after each: one Rust batch call, parallel over documents."""
        docs = list(docs)
        if not docs:
            return np.zeros(0, dtype=np.int32)
        encs = self.tk.encode_batch_fast(docs, add_special_tokens=False)
        return stream_from_lists([e.ids for e in encs], self.eot_id)

    def decode_doc(self, ids) -> str:
        return self.tk.decode(np.asarray(ids, dtype=np.int64).tolist(), skip_special_tokens=False)

    def char_count(self, ids) -> int:
        """Characters covered by these ids (each EOT counts 1), for bits per character."""
        ids = np.asarray(ids, dtype=np.int64)
        return int(self._chars[ids].sum()) if ids.size else 0


class BPETokenizer(_RustTokenizer):
    kind = "bpe"

    def __init__(self, tk):
        self._setup(tk, tk.token_to_id(_EOT), byte_level=True)

    @classmethod
    def train(cls, docs: Iterable[str], vocab_size: int) -> "BPETokenizer":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[_EOT], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        seen = [0]

        def counted():
            for b in batched(docs, 1024):
                seen[0] += len(b)
                yield b

        tk.train_from_iterator(counted(), trainer=trainer)
        if seen[0] == 0:
            raise ValueError("the real train split has no documents to fit a tokenizer on")
        return cls(tk)

    def to_json(self) -> dict:
        return {"kind": self.kind, "eot": _EOT, "tokenizer": json.loads(self.tk.to_str())}

    @classmethod
    def load(cls, path: str) -> "BPETokenizer":
        from tokenizers import Tokenizer

        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        if d.get("kind") != "bpe":
            raise ValueError(f"{path}: not a bpe tokenizer")
        return cls(Tokenizer.from_str(json.dumps(d["tokenizer"])))


class PretrainedTokenizer(_RustTokenizer):
    kind = "pretrained"
    FILES = "tokenizer_files"

    def __init__(self, hf, name: str):
        if not getattr(hf, "is_fast", False):
            raise ValueError(f"tokenizer.name={name!r} has no fast (Rust) tokenizer; pass one that does")
        if hf.backend_tokenizer.get_vocab_size(with_added_tokens=False) == 0:  # transformers 5 builds an empty one
            raise ValueError(f"tokenizer.name={name!r} has no vocabulary (no tokenizer files there?); pass a folder "
                             "holding the tokenizer's files")
        if hf.eos_token_id is None:
            hf.add_special_tokens({"eos_token": _EOT})
        self.hf, self.name = hf, name
        tk = hf.backend_tokenizer
        byte_level = "ByteLevel" in json.dumps(json.loads(tk.to_str()).get("decoder"))
        self._setup(tk, hf.eos_token_id, byte_level)

    @classmethod
    def from_name(cls, name: str) -> "PretrainedTokenizer":
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise ValueError("tokenizer.kind=pretrained needs `transformers`: pip install -e '.[hf]'") from None
        local = os.path.exists(name)
        if not local:
            from data.hfcorpus import hub_reachable, set_offline

            if not hub_reachable():
                set_offline()
                local = None  # cache only
        try:
            hf = AutoTokenizer.from_pretrained(name, local_files_only=local is None)
        except Exception as e:
            first = (str(e).strip().splitlines() or [""])[0]
            if local is None:
                raise ValueError(f"cannot load tokenizer.name={name!r}: the Hugging Face hub is not reachable and it "
                                 "is not in the cache; pass a local folder with --tokenizer.name=PATH") from None
            raise ValueError(f"cannot load tokenizer.name={name!r}: {type(e).__name__}: {first}") from None
        return cls(hf, name)

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "files": self.FILES, "eot_id": self.eot_id,
                "tokenizer": json.loads(self.tk.to_str())}

    def save(self, path: str) -> None:
        self.hf.save_pretrained(os.path.join(os.path.dirname(path) or ".", self.FILES))
        super().save(path)

    @classmethod
    def load(cls, path: str) -> "PretrainedTokenizer":
        from transformers import AutoTokenizer

        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        hf = AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(path) or ".", d["files"]), local_files_only=True)
        return cls(hf, d["name"])
