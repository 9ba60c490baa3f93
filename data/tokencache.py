"""Token cache: a finite corpus tokenized once into uint16/uint32 arrays on disk, read back memory-mapped.

`token_arrays(corpus, tok, cache_dir)` returns (train, val): 1-D read-only `np.memmap`s of token ids, each
document followed by EOT, train documents in source order. They live in
`<cache_dir>/tokens/<name>-<key>/{train.bin,val.bin,meta.json}`, key = hash(corpus fingerprint, tokenizer
fingerprint): the second load with the same source and tokenizer reuses them (nothing is read but meta.json);
a changed file has another fingerprint and is tokenized anew. Building streams the corpus in batches of documents
(`Corpus.iter_masked`), encodes each batch in one call (numpy for char, about 100 MB/s in one process; BPE and
pretrained in a pool of forked worker processes, one per core, since the Rust tokenizer's own threads barely
scale on its shared word cache) and appends it to the two files in order, so memory stays at one batch whatever the corpus size; a folder is written under a
temporary name and renamed when complete, so an interrupted build is never reused.
Tested in tests/test_sources.py; benchmarked by scripts/bench_tokenize.py.
"""
from __future__ import annotations

import collections
import fcntl
import hashlib
import json
import multiprocessing
import os
import shutil

import numpy as np


def cache_path(corpus, tok, cache_dir: str) -> str:
    key = hashlib.sha256(f"{corpus.fingerprint}:{tok.fingerprint}".encode()).hexdigest()[:16]
    return os.path.join(cache_dir, "tokens", f"{corpus.name}-{key}")


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 1 << 16 else np.uint32


def _open(path: str, dtype, n: int) -> np.ndarray:
    return np.memmap(path, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype=dtype)


def token_arrays(corpus, tok, cache_dir: str, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(train ids, val ids) of a finite corpus, memory-mapped from the cache (built on first use)."""
    path = cache_path(corpus, tok, cache_dir)
    meta_path = os.path.join(path, "meta.json")
    if not os.path.exists(meta_path):
        # Several runs (a sweep's points) may want the same cache at once: one builds it, the others wait on the
        # lock and then find it built, instead of tokenizing the corpus N times and racing on the rename.
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not os.path.exists(meta_path):
                    build(corpus, tok, path, progress)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    with open(meta_path) as f:
        meta = json.load(f)
    dtype = np.dtype(meta["dtype"])
    return (_open(os.path.join(path, "train.bin"), dtype, meta["train_tokens"]),
            _open(os.path.join(path, "val.bin"), dtype, meta["val_tokens"]))


def build(corpus, tok, path: str, progress: bool = False) -> dict:
    """Tokenize the whole corpus into `path` (train.bin, val.bin, meta.json); returns the meta."""
    dtype = token_dtype(tok.vocab_size)
    tmp = f"{path}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    counts = {"train_tokens": 0, "val_tokens": 0, "train_docs": 0, "val_docs": 0, "train_chars": 0, "val_chars": 0}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=corpus.n_docs, desc=f"tokenizing {corpus.name}", unit="doc", dynamic_ncols=True,
                   mininterval=0.5)
    workers = _workers(tok)
    pool = None
    try:
        if workers > 1:
            global _TOK
            _TOK = tok  # inherited by the forked workers
            pool = _fork_pool(workers)
            results = _bounded_imap(pool, corpus.iter_masked(), 2 * workers)
        else:
            results = (_encode_batch(b, tok) for b in corpus.iter_masked())
        with open(os.path.join(tmp, "train.bin"), "wb") as ftrain, open(os.path.join(tmp, "val.bin"), "wb") as fval:
            for n_docs, parts in results:
                for split, f in (("train", ftrain), ("val", fval)):
                    ids, docs, chars = parts[split]
                    f.write(ids.astype(dtype, copy=False).tobytes())
                    counts[f"{split}_tokens"] += len(ids)
                    counts[f"{split}_docs"] += docs
                    counts[f"{split}_chars"] += chars
                if bar is not None:
                    bar.update(n_docs)
        meta = {"dtype": np.dtype(dtype).name, "corpus": corpus.fingerprint, "tokenizer": tok.fingerprint, **counts}
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
        if os.path.exists(path):  # built meanwhile by another process, or left half-made: ours replaces it
            shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
    finally:
        if pool is not None:
            pool.terminate()
        if bar is not None:
            bar.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


_TOK = None  # the tokenizer of a forked worker


def _workers(tok) -> int:
    if tok.kind == "char" or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return min(os.cpu_count() or 1, 8)


def _fork_pool(workers: int):
    # The Rust tokenizer warns in a forked child once its threads were used; saying "false" silences that.
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        return multiprocessing.get_context("fork").Pool(workers)
    finally:
        if old is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


def _bounded_imap(pool, items, in_flight: int):
    """pool.imap in order, but with at most `in_flight` batches read ahead (Pool.imap would read them all)."""
    pending = collections.deque()
    for item in items:
        pending.append(pool.apply_async(_encode_batch, (item,)))
        if len(pending) >= in_flight:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def _encode_batch(item, tok=None):
    """(documents, is_val) -> (number of documents, {split: (ids, documents kept, characters incl. EOTs)})."""
    batch, is_val = item
    tok = tok or _TOK
    parts = {}
    for split, want in (("train", ~is_val), ("val", is_val)):
        docs = [d for d, k in zip(batch, want.tolist()) if k and d]
        ids = tok.encode_docs(docs) if docs else np.zeros(0, dtype=np.int32)
        parts[split] = (ids, len(docs), sum(len(d) + 1 for d in docs))
    return len(batch), parts
