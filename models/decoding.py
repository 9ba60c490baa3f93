"""Decoding rules the published closed-loop experiments use besides sampling: repetition penalty and beam search.

    logits = apply_repetition_penalty(logits, context, 1.2)   # (B, V), CTRL / Hugging Face definition
    ids = beam_decode(model, prompts, max_new=64, num_beams=5, eot_id=eot)   # (n, K + steps), deterministic

Repetition penalty θ (Keskar et al. 2019, CTRL; HF `RepetitionPenaltyLogitsProcessor`): for every token id that
occurs in a row's current context, its logit l becomes l / θ if l > 0 and l · θ otherwise (θ > 1 discourages
repeats; θ = 1 changes nothing). It acts before temperature, top-k and top-p, and before beam scoring.

Beam search (Shumailov et al. 2024 decode with a five-way beam through HF `generate`), following HF's beam search
with its defaults (length_penalty 1, early_stopping False): per prompt, `num_beams` running hypotheses; each step
every hypothesis is extended by every token, scored by its total log-probability (log-softmax of the logits,
temperature 1, top-k/top-p not applied), and the best `num_beams` extensions by tokens other than EOT run on. An
extension by EOT that ranks among the best `num_beams` finishes a hypothesis, which then competes by its total
divided by its generated length (EOT included); the best `num_beams` finished ones are kept. A prompt is done once
it has `num_beams` finished hypotheses and the worst beats the best running one at the current length; at max_new
tokens the running hypotheses join the competition at their length. The best is returned. With one beam this is
greedy decoding (up to and including the first EOT). Beam search draws no random numbers: the same model and
prompts give the same output, so unconditional documents (all from the prompt [EOT]) are all equal.
All hypotheses of a batch decode together in one KV cache of n · num_beams rows, reordered after every step
(`cache.reorder`); the context policy is models/sampling.py's (cut to the last block_size // 2 tokens and
re-prefill when the context would exceed block_size).
Tested in tests/test_sampling.py (repetition penalty, beam search on the built-in GPT) and tests/test_hf.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def apply_repetition_penalty(logits: torch.Tensor, context: torch.Tensor, penalty: float) -> torch.Tensor:
    """logits (B, V) and the ids of each row's context (B, L) long -> new logits (B, V): for every id in the
    row's context, l / penalty where l > 0, l · penalty otherwise; other columns unchanged."""
    if penalty == 1.0 or context.numel() == 0:
        return logits
    score = logits.gather(1, context)  # (B, L): a repeated id appears several times, with the same value
    score = torch.where(score > 0, score / penalty, score * penalty)
    return logits.scatter(1, context, score)


@torch.no_grad()
def beam_decode(model, prompts: torch.Tensor, max_new: int, num_beams: int, eot_id: int,
                repetition_penalty: float = 1.0, use_cache: bool = True, kv_dtype: torch.dtype | None = None,
                stop_at_eot: bool = True, length_penalty: float = 1.0) -> torch.Tensor:
    """Beam search from prompts (n, P) long on the model's device. Returns the best hypothesis per prompt,
    (n, P + steps) long with the prompt first and EOT after a finished hypothesis's EOT.
    use_cache=False recomputes the whole context every step (the slow reference)."""
    n, P = prompts.shape
    b = num_beams
    if b < 1 or max_new < 1:
        raise ValueError(f"beam search needs num_beams >= 1 and max_new >= 1, got {b} and {max_new}")
    device = prompts.device
    block = model.config.block_size
    half = block // 2
    rows, width = n * b, P + max_new
    ninf = float("-inf")
    tokens = torch.empty(rows, width, dtype=torch.long, device=device)  # the running hypotheses
    tokens[:, :P] = prompts.repeat_interleave(b, 0)
    length, start = P, 0  # tokens[:, :length] so far; the model's context is tokens[:, start:length]
    scores = torch.zeros(n, b, device=device)
    scores[:, 1:] = ninf  # the b copies of a prompt are one hypothesis until the first step
    scores = scores.view(rows)
    fin_scores = torch.full((n, b), ninf, device=device)  # finished hypotheses: length-normalised, best first
    fin_tokens = torch.full((n, b, width), eot_id, dtype=torch.long, device=device)
    row_done = torch.zeros(n, dtype=torch.bool, device=device)
    cache = model.new_kv_cache(n, device=device, dtype=kv_dtype) if use_cache else None

    def logits_now(new: torch.Tensor | None) -> torch.Tensor:
        """(rows, V) next-token logits; new: the tokens just appended, or None to re-prefill the context."""
        if not use_cache:
            return model(tokens[:, start:length])[:, -1]
        if new is None:
            cache.reset()
            return model(tokens[:, start:length], kv_cache=cache)[:, -1]
        return model(new[:, None], kv_cache=cache)[:, -1]

    # Prefill the n prompts once, then give every prompt's b hypotheses a copy of its cache rows.
    if use_cache:
        cache.reset()
        logits = model(prompts, kv_cache=cache)[:, -1].repeat_interleave(b, 0)
        cache.reorder(torch.arange(n, device=device).repeat_interleave(b))
    else:
        logits = logits_now(None)
    step = 0
    for step in range(1, max_new + 1):
        logits = apply_repetition_penalty(logits, tokens[:, start:length], repetition_penalty)
        logp = F.log_softmax(logits.float(), dim=-1)  # (rows, V)
        V = logp.size(-1)
        cand = (scores[:, None] + logp).view(n, b, V)  # total log-probability of every extension
        # An extension by EOT finishes a hypothesis if it ranks among the b best extensions (HF's rule); finished
        # hypotheses compete by total / (tokens generated, EOT included) ** length_penalty.
        kth = cand.view(n, b * V).topk(b, dim=1).values[:, -1:]  # (n, 1)
        eot = cand[:, :, eot_id]  # (n, b)
        ok = (eot >= kth) & torch.isfinite(eot) & ~row_done[:, None]
        new_scores = torch.where(ok, eot / step ** length_penalty, torch.full_like(eot, ninf))
        ended = fin_tokens.new_full((n, b, width), eot_id)
        ended[:, :, :length] = tokens.view(n, b, width)[:, :, :length]  # then EOT at `length`
        fin_scores, keep = torch.cat([fin_scores, new_scores], 1).topk(b, dim=1)  # (n, b)
        fin_tokens = torch.cat([fin_tokens, ended], 1).gather(1, keep[:, :, None].expand(n, b, width))
        # The running hypotheses: the b best extensions by other tokens.
        cand[:, :, eot_id] = ninf
        top, idx = cand.view(n, b * V).topk(b, dim=1)  # (n, b), best first
        src = (torch.arange(n, device=device)[:, None] * b + idx // V).view(rows)  # the hypothesis each extends
        nxt = (idx % V).view(rows)
        tokens[:, :length] = tokens[src, :length]
        tokens[:, length] = nxt
        length += 1
        scores = top.view(rows)
        # A prompt is done (HF's early_stopping=False test) once it has b finished hypotheses and the worst of them
        # beats the best running one scored at the current length.
        row_done |= torch.isfinite(fin_scores[:, -1]) & (fin_scores[:, -1] >= top[:, 0] / step ** length_penalty)
        if step == max_new or (stop_at_eot and bool(row_done.all())):
            break
        if use_cache:
            cache.reorder(src)
        if length - start > block:  # context would exceed block_size: keep its last half
            start = length - half
            logits = logits_now(None)
        else:
            logits = logits_now(nxt)
    # Prompts not done: their running hypotheses compete with the finished ones, scored at their length.
    running = torch.where(row_done[:, None], torch.full_like(fin_scores, ninf),
                          scores.view(n, b) / step ** length_penalty)
    best = torch.cat([fin_scores, running], 1).argmax(1)  # (n,)
    every = torch.cat([fin_tokens, tokens.view(n, b, width)], 1)[:, :, :length]  # (n, 2b, P + steps)
    return every[torch.arange(n, device=device), best]
