"""Benchmark: tokenize a ~100 MB text corpus into the memory-mapped token cache, char and byte-level BPE.

Makes the corpus by repeating a source text (default ../shared/corpora/tinyshakespeare.txt) in a temporary folder
(deleted afterwards; never commit a corpus), then, for each tokenizer in its own process (so peak memory is its
own): loads the corpus (content hash + document count), fits the tokenizer on the train split (BPE: on the first
`--fit-chars` characters of it), tokenizes the whole corpus into the cache (the timed part: MB/s = file size /
seconds), and loads it a second time from the cache. Prints a Markdown table.
Targets (2 cores): char >= 50 MB/s, BPE >= 4 MB/s, peak RSS < 1.5 GB.

Run: python scripts/bench_tokenize.py [--mb 100] [--source PATH] [--vocab 2048] [--fit-chars 10000000]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def make_corpus(source: str, path: str, mb: float) -> int:
    with open(source, "rb") as f:
        text = f.read().rstrip(b"\n") + b"\n\n"
    reps = max(1, int(mb * 1e6 // len(text)) + 1)
    with open(path, "wb") as f:
        for _ in range(reps):
            f.write(text)
    return os.path.getsize(path)


def one(kind: str, path: str, cache: str, vocab: int, fit_chars: int) -> dict:
    """Runs in a child process: load, fit, tokenize into the cache, reload; returns timings and peak RSS."""
    from data.corpus import CorpusConfig, load_corpus
    from data.tokencache import token_arrays
    from data.tokenizer import TokenizerConfig, build_tokenizer

    t = time.perf_counter()
    corpus = load_corpus(CorpusConfig(path=path, cache_dir=cache))
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    tcfg = TokenizerConfig(kind=kind, vocab_size=vocab, fit_chars=fit_chars)
    tok = build_tokenizer(tcfg, corpus.iter_docs("train", tcfg.fit_chars))
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    train, val = token_arrays(corpus, tok, cache, progress=False)
    tok_s = time.perf_counter() - t
    t = time.perf_counter()
    train2, _ = token_arrays(load_corpus(CorpusConfig(path=path, cache_dir=cache)), tok, cache)
    reload_s = time.perf_counter() - t
    assert len(train2) == len(train)
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    # Encoding workers (forked, reaped when their pool closes): the largest one's peak. Together with this
    # process they hold at most rss + cores × worker (an upper bound: forked pages are shared until written).
    kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"kind": kind, "tokens": int(len(train) + len(val)), "load_s": load_s, "fit_s": fit_s, "tok_s": tok_s,
            "reload_s": reload_s, "peak_rss_mb": rss_kb / 1024, "worker_rss_mb": kids_kb / 1024,
            "vocab": tok.vocab_size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=os.path.join(ROOT, "..", "shared", "corpora", "tinyshakespeare.txt"))
    ap.add_argument("--mb", type=float, default=100.0, help="corpus size, MB")
    ap.add_argument("--vocab", type=int, default=2048, help="BPE vocabulary size")
    ap.add_argument("--fit-chars", type=int, default=10_000_000, help="BPE is fitted on this many train characters")
    ap.add_argument("--one", nargs=5, help=argparse.SUPPRESS)  # child mode: kind path cache vocab fit_chars
    args = ap.parse_args()
    if args.one:
        kind, path, cache, vocab, fit = args.one
        print(json.dumps(one(kind, path, cache, int(vocab), int(fit))))
        return
    if not os.path.exists(args.source):
        sys.exit(f"source text {args.source} does not exist; pass --source PATH")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "corpus.txt")
        size = make_corpus(args.source, path, args.mb)
        rows = []
        for kind in ("char", "bpe"):
            out = subprocess.run([sys.executable, __file__, "--one", kind, path, os.path.join(tmp, "cache"),
                                  str(args.vocab), str(args.fit_chars if kind == "bpe" else 0)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"corpus: {size / 1e6:.1f} MB ({os.path.basename(args.source)} repeated), {os.cpu_count()} cores\n")
    print("| tokenizer | MB/s | peak RSS (MB) | largest worker (MB) | bound, all processes (MB) | tokens | tokenize (s) "
          "| fit (s) | load + count (s) | cached reload (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        name = "char" if r["kind"] == "char" else f"bpe (vocab {r['vocab']})"
        bound = r["peak_rss_mb"] + (os.cpu_count() or 1) * r["worker_rss_mb"]
        print(f"| {name} | {size / 1e6 / r['tok_s']:.1f} | {r['peak_rss_mb']:.0f} | {r['worker_rss_mb']:.0f} | {bound:.0f} "
              f"| {r['tokens']:,} | {r['tok_s']:.1f} | "
              f"{r['fit_s']:.1f} | {r['load_s']:.1f} | {r['reload_s']:.2f} |")


if __name__ == "__main__":
    main()
