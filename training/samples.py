"""Sampling one generation's documents: as many as the next generation's synthetic share and the measures need.

`sampling_goal(cfg, tok)` says when there are enough: the synthetic share in training-stream tokens (documents
after `mix.cut_samples`, each with its EOT), the measured character budget (`loop.measure_chars`) and
`loop.bleu_docs` documents of at least 4 words for self-BLEU; `sample_tokens` decodes batches until then, split
over the ranks under torchrun: unconditional documents, or with sample.prompt_tokens=K continuations of the K-token
blocks of generation 0's real set (`prompt_blocks`). Called by training/loop.py; tested in tests/test_loop.py and
tests/test_hf.py.
"""
from __future__ import annotations

import numpy as np
import torch

from models.sampling import SampleConfig, generate_continuations, generate_documents
from training import distributed
from training.measures.sample_text import SELF_BLEU_MIN_WORDS, words

# Sampling gives up on reaching loop.bleu_docs documents after this many times as many documents
BLEU_DOCS_CAP = 10
# ... and on filling the synthetic share with documents the model ended (mix.cut_samples=drop) after sampling
# this many times the share in tokens
DROP_CAP = 20


def sampling_goal(cfg, tok):
    """When sampling may stop, for a RunConfig: goal(state, new_docs) -> True once there are enough documents
    (state: a dict the goal keeps its counts in); raises ValueError when mix.cut_samples=drop cannot fill the share.

    Hard needs: the synthetic share of a generation in training-stream tokens (documents after mix.cut_samples,
    each with its EOT) and the measured character budget; soft need: loop.bleu_docs documents of >= 4 words for
    self-BLEU (given up after BLEU_DOCS_CAP × as many documents: self-BLEU is then NaN)."""
    share, measure = cfg.mix.synthetic_tokens(1), cfg.loop.measure_chars + 1
    cap, drop = cfg.sample.doc_cap, cfg.mix.cut_samples == "drop"

    def goal(state: dict, new_docs: list[np.ndarray]) -> bool:
        for d in new_docs:
            ended = len(d) < cap
            state["raw"] = state.get("raw", 0) + len(d) + int(ended)
            state["train"] = state.get("train", 0) + (len(d) + 1 if ended or not drop else 0)
            state["bleu"] = state.get("bleu", 0) + int(len(words(tok.decode_doc(d))) >= SELF_BLEU_MIN_WORDS)
            state["docs"] = state.get("docs", 0) + 1
        if state["train"] < share and state["raw"] >= DROP_CAP * max(share, 1):
            raise ValueError(f"the model ended only {state['train']} tokens' worth of its {state['docs']} sampled "
                             f"documents before their cap of {cap} tokens, short of the synthetic share of {share} "
                             "tokens: mix.cut_samples=drop cannot fill it; use --mix.cut_samples=keep or raise "
                             "--sample.max_new_tokens")
        hard = state["train"] >= share and state["raw"] >= measure
        return hard and (state["bleu"] >= cfg.loop.bleu_docs or state["docs"] >= BLEU_DOCS_CAP * cfg.loop.bleu_docs)

    return goal


def prompt_blocks(real: np.ndarray, k: int) -> np.ndarray:
    """Consecutive K-token blocks (N, K) of a token stream (generation 0's real set), the tail shorter than K dropped:
    the prompts of sample.prompt_tokens=K, the same every generation."""
    n = len(real) // k
    if n == 0:
        raise ValueError(f"sample.prompt_tokens={k} exceeds the {len(real)} tokens of generation 0's real set")
    return np.asarray(real[: n * k], dtype=np.int64).reshape(n, k)


def sample_tokens(model, scfg: SampleConfig, eot_id: int, goal, batch_generator, device, amp,
                  progress: bool, desc: str, prompts: np.ndarray | None = None) -> list[np.ndarray]:
    """Sample whole documents, sample.batch_size per batch, until `goal(state, new_docs)` says there are enough
    (`sampling_goal`). Returns the same documents on every rank. With prompts (N, K), batch i continues prompts
    i·batch_size, ... (taken in order, wrapping around), each by up to K tokens.

    Batch i draws from its own generator `batch_generator(i)`. Under torchrun rank r decodes batches r, r + W, ...
    and each round's batches are gathered in order, keeping exactly the batches one process would have kept."""
    world, rank = distributed.world_size(), distributed.rank()
    docs, first, state, done = [], 0, {}, False
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc=desc, unit="doc", leave=False, dynamic_ncols=True, mininterval=0.5)
    while not done:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            if prompts is None:
                mine = generate_documents(model, scfg.batch_size, scfg, eot_id, batch_generator(first + rank),
                                          device=device)
            else:
                at = (np.arange(scfg.batch_size) + (first + rank) * scfg.batch_size) % len(prompts)
                mine = generate_continuations(model, prompts[at], scfg, eot_id, batch_generator(first + rank),
                                              device=device)
        mine = [np.asarray(d, dtype=np.int32) for d in mine]
        for batch in distributed.gather_objects(mine):  # batches first .. first + W − 1, in order
            if done:
                break  # a later rank's batch of the last round: one process would not have sampled it
            docs.extend(batch)
            done = goal(state, batch)
        first += world
        if bar is not None:
            bar.update(len(docs) - bar.n)
    if bar is not None:
        bar.close()
    return docs
