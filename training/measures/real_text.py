"""The model on real text: measures on fixed real validation windows, and per-document scoring.

The evaluation windows never move (same windows every generation, every condition): `eval_windows` builds them
deterministically; `evaluate` gives the `val/…` keys registered below; `score_documents` gives the total nats of
whole documents (used by the truth and model-on-samples measures).

Model contract: `model(idx)` with idx (B, T) long -> logits (B, T, V), and `model.config.block_size`.

Test: `python -m pytest tests/test_evaluate.py`
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from training.measures.registry import register

LN2 = math.log(2.0)

register("val/loss", "nats/token", "cross-entropy on the fixed real val windows")
register("val/bpc", "bits/char", "bits per character on the fixed real val windows", main=2)
register("val/ppl", "per token", "perplexity on the fixed real val windows, exp(val/loss)")
register("val/entropy", "bits", "mean next-token entropy at T = 1 on the real val contexts", main=1)
register("val/top1", "probability", "mean top-1 next-token probability on the real val contexts")


def bits_per_char(nats_sum: float, chars: int) -> float:
    """Summed nats -> bits per character: nats_sum / (ln 2 · chars)."""
    if chars <= 0:
        raise ValueError(f"number of characters must be > 0, got {chars}")
    return nats_sum / (LN2 * chars)


def model_block_size(model) -> int:
    """Context length of a model (`model.config.block_size`, the models/ contract)."""
    return int(model.config.block_size)


def eval_windows(ids: np.ndarray, block_size: int, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed strided windows over the first max_tokens + 1 tokens of a 1-D token stream (no randomness).

    Windows of block_size + 1 tokens start every stride = block_size // 2 tokens. The first window scores all
    its targets; every later window scores only its last `stride` targets, the rest being context, so each
    target in range is scored exactly once and (after the first window) with >= block_size - stride >=
    block_size // 2 tokens of context. Returns x, y: (W, block_size) int64; y is -1 where not scored and in the
    padding of the last window (padded inputs are 0; causal attention keeps them out of scored predictions).
    """
    if block_size < 2:
        raise ValueError(f"block_size must be >= 2 for strided windows, got {block_size}")
    ids = np.asarray(ids).reshape(-1)
    n = min(len(ids), max_tokens + 1)  # tokens used; n - 1 targets
    if n < 2:
        raise ValueError(f"need at least 2 tokens to evaluate, got {n}")
    stride = block_size // 2
    n_windows = 1 + max(0, -(-(n - 1 - block_size) // stride))  # ceil division
    pos = np.arange(n_windows)[:, None] * stride + np.arange(block_size + 1)  # (W, T+1) stream positions
    inside = pos < n
    buf = np.where(inside, ids[np.minimum(pos, n - 1)], 0).astype(np.int64)
    x = buf[:, :-1].copy()
    y = np.where(inside[:, 1:], buf[:, 1:], -1)
    y[1:, : block_size - stride] = -1  # later windows: first part is context only
    return x, y.astype(np.int64)


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _scored_logprobs(model, xb: torch.Tensor, yb: torch.Tensor, autocast_dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities (N, V) fp32 at the N scored positions of a batch, and their targets (N,)."""
    with _autocast(xb.device, autocast_dtype):
        logits = model(xb)  # (B, T, V)
    mask = yb >= 0
    return F.log_softmax(logits[mask].float(), dim=-1), yb[mask]


@contextlib.contextmanager
def _eval_mode(model):
    """model.eval() + inference mode, restoring the training flag afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def evaluate(model, x: np.ndarray, y: np.ndarray, chars: int, device, batch_size: int = 64,
             autocast_dtype: torch.dtype | None = None) -> dict:
    """Measures of `model` on the fixed windows (x, y) from `eval_windows`.

    `chars`: characters covered by the scored targets (from the tokenizer; for a char tokenizer, the number of
    scored tokens). Returns `val/loss` (mean nats per scored token), `val/bpc` (summed nats / (ln 2 · chars)),
    `val/ppl` (exp(val/loss), per token), `val/entropy` (mean entropy of the next-token distribution at T = 1,
    bits), `val/top1` (mean top-1 probability), plus `nats_sum` (float) and `n_tokens` (int) for callers.
    """
    device = torch.device(device)
    nats = ent = top1 = 0.0
    n_tok = 0
    with _eval_mode(model):
        for i in range(0, len(x), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])).to(device)
            yb = torch.from_numpy(np.ascontiguousarray(y[i:i + batch_size])).to(device)
            logp, tgt = _scored_logprobs(model, xb, yb, autocast_dtype)  # (N, V), (N,)
            if tgt.numel() == 0:
                continue
            p = logp.exp()
            nats -= logp.gather(1, tgt[:, None]).double().sum().item()
            ent += torch.special.entr(p).sum(-1).double().sum().item()  # nats; entr(0) = 0 even for -inf logits
            top1 += p.max(-1).values.double().sum().item()
            n_tok += int(tgt.numel())
    if n_tok == 0:
        raise ValueError("no scored targets in the evaluation windows")
    loss = nats / n_tok
    return {
        "val/loss": loss,
        "val/bpc": bits_per_char(nats, chars),
        "val/ppl": math.exp(loss),
        "val/entropy": ent / n_tok / LN2,
        "val/top1": top1 / n_tok,
        "nats_sum": nats,
        "n_tokens": n_tok,
    }


def score_documents(model, docs_ids: list[np.ndarray], eot_id: int, device, batch_size: int = 64,
                    autocast_dtype: torch.dtype | None = None, ended: list[bool] | None = None) -> np.ndarray:
    """Total nats of each document followed by EOT, (D,) float64.

    Each document is scored as the stream [eot] doc [eot] (EOT doubles as BOS), so len(doc) + 1 targets; where
    `ended[d]` is False (a sample cut by the length cap: the model never emitted its EOT) the final EOT is not
    scored, so len(doc) targets. A
    document longer than block_size uses the `eval_windows` rule (windows of block_size, stride block_size // 2).
    Windows of all documents are sorted by length and batched, each batch cut to its longest window, so short
    documents cost little and no document sees another as context.
    """
    device = torch.device(device)
    block_size = model_block_size(model)
    xs, ys, owner = [], [], []
    for d, doc in enumerate(docs_ids):
        tail = [eot_id] if ended is None or ended[d] else []
        stream = np.concatenate([[eot_id], np.asarray(doc, dtype=np.int64).reshape(-1), tail]).astype(np.int64)
        x, y = eval_windows(stream, block_size, len(stream) - 1)
        xs.append(x)
        ys.append(y)
        owner.extend([d] * len(x))
    out = np.zeros(len(docs_ids), dtype=np.float64)
    if not xs:
        return out
    x, y, owner = np.concatenate(xs), np.concatenate(ys), np.asarray(owner)
    # Real length of a window = 1 + last scored position; inputs past it never influence scored logits.
    length = block_size - np.argmax((y >= 0)[:, ::-1], axis=1)
    order = np.argsort(length, kind="stable")
    with _eval_mode(model):
        for i in range(0, len(order), batch_size):
            rows = order[i:i + batch_size]
            t = int(length[rows].max())
            xb = torch.from_numpy(x[rows, :t]).to(device)
            yb = torch.from_numpy(y[rows, :t]).to(device)
            with _autocast(device, autocast_dtype):
                logits = model(xb)  # (B, t, V)
            logp = F.log_softmax(logits.float(), dim=-1)
            tok = -logp.gather(2, yb.clamp(min=0)[..., None])[..., 0]  # (B, t) nats
            tok = torch.where(yb >= 0, tok, torch.zeros_like(tok)).double().sum(1).cpu().numpy()
            np.add.at(out, owner[rows], tok)
    return out
