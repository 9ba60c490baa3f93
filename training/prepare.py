"""Load and check everything that can be wrong with the user's input before anything is written: `prepare(cfg)`
gives a `Prepared` (the corpus and its fixed train/val split, the tokenizer fitted on real train at generation 0 or
reloaded from the run directory, the real-data source of every generation, the fixed val windows, the fixed true
text of the synthetic language, the word statistics of the real corpus, the device). Bad input raises one
ValueError (or FileNotFoundError) naming the option; the CLI turns it into one line and exit status 2.
Tested in tests/test_cli.py, tests/test_corpus.py and tests/test_loop.py.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass

import numpy as np
import torch

from data.corpus import Corpus, load_corpus
from data.mixing import RealSource
from data.tokencache import token_arrays
from data.tokenizer import build_tokenizer, load_tokenizer
from training import distributed
from training import rundir as ck
from training.measures.real_text import eval_windows
from training.measures.sample_text import RealStats
from training.runconfig import RunConfig, resolve_tokenizer
from training.trainer import resolve_device


@dataclass
class Prepared:
    """Everything derived from the config before the first write: data, tokenizer, fixed evaluation sets."""

    cfg: RunConfig
    corpus: Corpus
    tokenizer: object
    real: RealSource
    real_stats: RealStats
    val_x: np.ndarray
    val_y: np.ndarray
    val_chars: int
    truth_docs: list[np.ndarray] | None
    truth_nats: np.ndarray | None
    device: torch.device


def prepare(cfg: RunConfig, run_dir: str | None = None) -> Prepared:
    """Load and check the inputs. Bad input raises ValueError/FileNotFoundError; nothing is written to run_dir.

    A finite corpus is tokenized once into the token cache (`corpus.cache_dir`, memory-mapped; data/tokencache.py);
    the word statistics of the real corpus use its first `corpus.stats_chars` characters of train and of val.
    """
    cfg = resolve_tokenizer(cfg)
    if cfg.model.kind == "hf":
        from models.hf import check

        check(cfg.model)  # the checkpoint exists (local, cached or on a reachable hub) and block_size fits it
    elif cfg.train.grad_checkpointing:
        raise ValueError("train.grad_checkpointing=true is for model.kind=hf")
    if cfg.train.epochs and cfg.loop.first_steps:
        raise ValueError("train.epochs sets every generation's steps, generation 0 included; drop --loop.first_steps")
    device = distributed.init(resolve_device(cfg.train.device))  # under torchrun: join the group, cuda:LOCAL_RANK
    distributed.check_batch(cfg.train.batch_size)
    corpus = load_corpus(cfg.corpus)
    if cfg.mix.tokens_per_generation == 0 and corpus.infinite:
        raise ValueError("mix.tokens_per_generation=0 (the whole real train split) needs a finite corpus; "
                         "the synthetic language never runs out: give a number")
    tok_path = os.path.join(run_dir, "tokenizer.json") if run_dir else None
    if tok_path and os.path.exists(tok_path) and ck.completed_generations(run_dir) > 0:
        tok = load_tokenizer(tok_path)  # frozen at generation 0: reload, never refit
    else:
        docs = corpus.iter_docs("train", cfg.tokenizer.fit_chars)
        if corpus.language is not None:  # its alphabet is known: no character of it may be missing by chance
            docs = itertools.chain(docs, [" ".join(corpus.language.vocab) + "."])
        tok = build_tokenizer(cfg.tokenizer, docs, closed_alphabet=corpus.language is not None)
    if cfg.model.vocab_size and cfg.model.vocab_size < tok.vocab_size:
        raise ValueError(f"model.vocab_size={cfg.model.vocab_size} is smaller than the tokenizer's {tok.vocab_size}")
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=cfg.model.vocab_size or tok.vocab_size))
    block = cfg.model.block_size
    if corpus.infinite:
        train_ids, val_ids = None, tok.encode_docs(corpus.val_docs)
    else:
        train_ids, val_ids = token_arrays(corpus, tok, cfg.corpus.resolved_cache_dir,
                                         progress=cfg.loop.progress and distributed.is_main())
    if len(val_ids) < block + 1:
        raise ValueError(f"the real val split has {len(val_ids)} tokens, fewer than one window of model.block_size+1={block + 1}; "
                         "use a larger corpus, a larger --corpus.val_fraction or a smaller --model.block_size")
    if cfg.mix.tokens_per_generation == 0:  # the whole real train split, resolved once (config.json keeps the number)
        cfg = dataclasses.replace(cfg, mix=dataclasses.replace(cfg.mix, tokens_per_generation=len(train_ids)))
    if cfg.sample.prompt_tokens > block // 2:
        raise ValueError(f"sample.prompt_tokens={cfg.sample.prompt_tokens}: a prompt and its continuation of as many "
                         f"tokens must fit model.block_size={block}, so at most {block // 2}")
    real = RealSource(corpus, tok, cfg.mix, cfg.seed, stream=train_ids)
    if real.stream is not None:
        if len(real.stream) < block + 1:
            raise ValueError(f"the real train split has {len(real.stream)} tokens, fewer than one window of {block + 1}")
        fed = real.generations_supported(limit=cfg.loop.generations)
        if fed == 0:
            raise ValueError(f"the real train split has {len(real.stream)} tokens, fewer than one generation's budget "
                             f"mix.tokens_per_generation={cfg.mix.tokens_per_generation}")
        if fed is not None and fed < cfg.loop.generations:
            raise ValueError(f"the corpus feeds only {fed} generations of fresh real data at this budget "
                             f"(loop.generations={cfg.loop.generations}); use --mix.allow_reuse=true (wrap around), "
                             "--mix.real_data=fixed, a smaller --mix.tokens_per_generation or a larger corpus")
    if cfg.mix.tokens_per_generation < block + 1:
        raise ValueError(f"mix.tokens_per_generation={cfg.mix.tokens_per_generation} is smaller than one window of {block + 1}")
    val_x, val_y = eval_windows(val_ids, block, min(cfg.loop.eval_tokens, len(val_ids) - 1))
    val_chars = tok.char_count(val_y[val_y >= 0])
    truth_docs = truth_nats = None
    if corpus.language is not None:
        # Fixed true text (same for every generation, seed and condition): excess bits are measured on it.
        docs = corpus.language.sample_chars(cfg.loop.truth_chars, np.random.default_rng([cfg.corpus.split_seed, 0x7247]))
        truth_docs = [tok.encode(d) for d in docs]
        truth_nats = -np.array([corpus.language.logprob(d) for d in docs])
    stats = RealStats.from_docs(list(corpus.iter_docs("train", cfg.corpus.stats_chars)),
                                list(corpus.iter_docs("val", cfg.corpus.stats_chars)))
    return Prepared(cfg, corpus, tok, real, stats, val_x, val_y, val_chars, truth_docs, truth_nats, device)
