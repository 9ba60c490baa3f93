"""Sampling documents from a GPT: next-token rule, batched KV-cache decoding, and a slow reference.

    docs = generate_documents(model, 100, SampleConfig(temperature=0.8), eot_id, torch.Generator().manual_seed(0))

Every document starts from the prompt [eot_id] (EOT doubles as BOS) and ends when the model emits
EOT (not kept) or after `max_new_tokens` tokens. Up to `batch_size` documents decode together: one
prefill, then one token per step from a preallocated KV cache.

Context policy (shared by both paths, so they agree exactly): the model sees at most block_size
tokens. When appending a token would make the context block_size + 1 tokens long, the context is cut
to its last block_size // 2 tokens and the cache is rebuilt by prefilling those. All rows of a batch
have the same length, so this happens for the whole batch at once.

Randomness: one `sample_next_token` call per step for the whole batch (finished rows included), and
both paths check "all rows finished" only every CHECK_EVERY steps, so the fast path and
`generate_reference` consume the generator identically. If the generator is on another device than
the model (a CPU generator with a CUDA model), one seed is drawn from it to seed a generator on the
model's device, so the draws stay on the device without a host sync per step.

Tested by `pytest tests/test_sampling.py`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

CHECK_EVERY = 16  # decode steps between host-side "all finished?" checks (each check syncs)


@dataclass
class SampleConfig:
    temperature: float = field(default=1.0, metadata={"help": "softmax temperature T; 0 = greedy (argmax)"})
    top_k: int = field(default=0, metadata={"help": "keep only the k most likely tokens; 0 = off"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus: smallest set of tokens with mass >= p, in (0, 1]"})
    max_new_tokens: int = field(default=256, metadata={"help": "length cap of one document, tokens"})
    batch_size: int = field(default=64, metadata={"help": "documents decoded together"})
    max_batch_memory_mb: int = field(default=0, metadata={"help": "automatic batch size: the most documents whose KV cache and decode buffers fit in this many MiB (estimate from the model's dimensions; never above sample.batch_size); 0 = off"})

    def __post_init__(self):
        if not self.temperature >= 0:
            raise ValueError(f"sample.temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"sample.top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"sample.top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"sample.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ValueError(f"sample.batch_size must be >= 1, got {self.batch_size}")
        if self.max_batch_memory_mb < 0:
            raise ValueError(f"sample.max_batch_memory_mb must be >= 0 (0 = off), got {self.max_batch_memory_mb}")


def bytes_per_row(model_cfg, max_new_tokens: int, elem_bytes: int = 4) -> int:
    """Estimated bytes one decoded row needs: its KV cache (2 · n_layer · block_size · n_embd elements), the
    prefill activations of one context window (about 12 · n_embd + vocab fp32 values per position: qkv, MLP
    hidden, logits) and the int64 token buffer. An estimate, not a measurement (allocator slack not counted)."""
    c = model_cfg
    kv = 2 * c.n_layer * c.block_size * c.n_embd * elem_bytes
    prefill = c.block_size * (12 * c.n_embd + c.vocab_size) * 4
    return kv + prefill + 8 * (1 + max_new_tokens)


def auto_batch_size(model_cfg, cfg: SampleConfig, elem_bytes: int = 4) -> int:
    """sample.batch_size, or with sample.max_batch_memory_mb > 0 the most rows whose estimated memory
    (`bytes_per_row`) fits the cap, at least 1 and at most sample.batch_size."""
    if cfg.max_batch_memory_mb <= 0:
        return cfg.batch_size
    fits = cfg.max_batch_memory_mb * 2**20 // bytes_per_row(model_cfg, cfg.max_new_tokens, elem_bytes)
    return int(max(1, min(cfg.batch_size, fits)))


def sample_next_token(logits: torch.Tensor, temperature: float, top_k: int, top_p: float,
                      generator: torch.Generator) -> torch.Tensor:
    """Draw one token per row from logits (B, V). Returns (B,) long.

    temperature 0 is argmax (no draw). Otherwise p ∝ softmax(logits / T) in fp32, restricted to the
    top_k survivors (top_k 0 or >= V: no restriction), then to the nucleus (smallest set of most
    likely tokens whose mass reaches top_p, at least one). With top_k=0, top_p=1 this is exactly
    p ∝ θ^(1/T) for the model's distribution θ.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    V = logits.size(-1)
    ids = None  # (B, K) vocabulary ids of the columns of `probs` when restricted
    if 0 < top_k < V:
        logits, ids = torch.topk(logits, top_k, dim=-1)  # sorted, highest first
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        if ids is None:
            probs, ids = torch.sort(probs, dim=-1, descending=True)
        # Drop a token when the mass strictly before it already reaches p (keeps the first always).
        before = torch.cumsum(probs, dim=-1) - probs
        probs = probs.masked_fill(before >= top_p, 0.0)
    choice = torch.multinomial(probs, 1, generator=generator)  # (B, 1), index into the columns
    if ids is not None:
        choice = ids.gather(-1, choice)
    return choice.squeeze(-1)


def _device_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """The generator itself if it lives on `device`, else a new one there seeded from it (one draw)."""
    if generator.device.type == device.type:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def _to_documents(tokens: torch.Tensor, eot_id: int) -> list[np.ndarray]:
    """(B, 1 + n) ids on any device, prompt first -> per row the tokens before the first EOT."""
    gen = tokens[:, 1:].cpu().numpy().astype(np.int64)
    docs = []
    for row in gen:
        ends = np.flatnonzero(row == eot_id)
        docs.append(row[: ends[0]] if len(ends) else row)
    return docs


def _decode_batch(model: nn.Module, n: int, cfg: SampleConfig, eot_id: int,
                  generator: torch.Generator, device: torch.device, use_cache: bool,
                  stop_at_eot: bool = True) -> torch.Tensor:
    """Decode n rows from the prompt [eot_id]. Returns ids (n, 1 + steps) with the prompt first.

    use_cache=False is the slow reference: full recompute of the current context every step.
    stop_at_eot=False always decodes max_new_tokens steps (benchmarks: a fixed amount of work).
    """
    block = model.config.block_size
    half = block // 2
    tokens = torch.empty(n, 1 + cfg.max_new_tokens, dtype=torch.long, device=device)
    tokens[:, 0] = eot_id
    length, start = 1, 0  # tokens[:, :length] so far; the model's context is tokens[:, start:length]
    done = torch.zeros(n, dtype=torch.bool, device=device)
    # Under autocast, keep keys/values in the autocast dtype (what attention consumes anyway).
    amp = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
    cache = model.new_kv_cache(n, device=device, dtype=amp) if use_cache else None

    def logits_now(new_only: bool) -> torch.Tensor:  # (n, V) next-token logits for the current context
        if not use_cache:
            return model(tokens[:, start:length])[:, -1]
        if new_only:
            return model(tokens[:, length - 1:length], kv_cache=cache)[:, -1]
        cache.reset()  # (re)build the cache from the whole context window
        return model(tokens[:, start:length], kv_cache=cache)[:, -1]

    logits = logits_now(new_only=False)
    for step in range(1, cfg.max_new_tokens + 1):
        nxt = sample_next_token(logits, cfg.temperature, cfg.top_k, cfg.top_p, generator)  # (n,)
        tokens[:, length] = nxt
        length += 1
        done |= nxt == eot_id  # finished rows keep decoding; their tokens after EOT are dropped
        if step == cfg.max_new_tokens or (stop_at_eot and step % CHECK_EVERY == 0 and bool(done.all())):
            break
        if length - start > block:  # context would exceed block_size: keep its last half
            start = length - half
            logits = logits_now(new_only=False)
        else:
            logits = logits_now(new_only=True)
    return tokens[:, :length]


def _generate(model, n_docs, cfg, eot_id, generator, device, use_cache):
    if n_docs < 0:
        raise ValueError(f"number of documents must be >= 0, got {n_docs}")
    if not 0 <= eot_id < model.config.vocab_size:
        raise ValueError(f"eot_id {eot_id} is outside the vocabulary of size {model.config.vocab_size}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    generator = _device_generator(generator, device)
    was_training = model.training
    model.eval()
    docs: list[np.ndarray] = []
    amp = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
    elem = (amp or next(model.parameters()).dtype).itemsize
    batch_size = auto_batch_size(model.config, cfg, elem)
    try:
        with torch.inference_mode():
            for first in range(0, n_docs, batch_size):
                n = min(batch_size, n_docs - first)
                batch = _to_documents(_decode_batch(model, n, cfg, eot_id, generator, device, use_cache), eot_id)
                docs.extend(batch)
    finally:
        model.train(was_training)
    return docs


def generate_documents(model: nn.Module, n_docs: int, cfg: SampleConfig, eot_id: int,
                       generator: torch.Generator, device=None) -> list[np.ndarray]:
    """Sample n_docs documents (int64 token ids, EOT not included) with a KV cache, batch_size at a
    time. device defaults to the model's."""
    return _generate(model, n_docs, cfg, eot_id, generator, device, use_cache=True)


def decode(model: nn.Module, n: int, cfg: SampleConfig, eot_id: int, generator: torch.Generator,
           device=None, use_cache: bool = True, stop_at_eot: bool = True) -> torch.Tensor:
    """One batch of n rows as raw ids (n, 1 + steps), prompt [eot_id] first, tokens after EOT kept.
    use_cache=False is the full-recompute path (nanoGPT's way); stop_at_eot=False decodes exactly
    max_new_tokens steps whatever is sampled (what scripts/bench.py times)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    generator = _device_generator(generator, device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return _decode_batch(model, n, cfg, eot_id, generator, device, use_cache, stop_at_eot)
    finally:
        model.train(was_training)


def generate_reference(model: nn.Module, n_docs: int, cfg: SampleConfig, eot_id: int,
                       generator: torch.Generator, device=None) -> list[np.ndarray]:
    """Slow reference for tests: no cache, full recompute each step, same context policy and the
    same generator consumption, so it matches generate_documents token for token (fp32)."""
    return _generate(model, n_docs, cfg, eot_id, generator, device, use_cache=False)
