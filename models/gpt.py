"""A small GPT (nanoGPT-like): config, KV cache and the model, with one forward contract.

Pre-LayerNorm transformer blocks, learned absolute position embeddings (same layout as HF GPT-2),
causal `F.scaled_dot_product_attention` (written out as two batched matmuls for one new token against a cache:
faster on a CPU), a 4x GELU MLP, no biases, a final LayerNorm and an lm_head tied to the token embedding. The
initialisation is drawn from an explicit CPU `torch.Generator`, so two models built from equally seeded generators
are bit-identical and the global RNG is never touched (dropout, off by default, does use the global RNG while
training).

    model = GPT(GPTConfig(vocab_size=65), torch.Generator().manual_seed(0))   # or models.build_model(cfg, gen)
    logits = model(idx)                                  # (B, T, V) float32
    loss = model(idx, targets)                           # scalar, nats/token
    nats = model(idx, targets, reduction="none")         # (B, T), nats/token, 0 where target == -1
    cache = model.new_kv_cache(B); model(prompt, kv_cache=cache); model(next_tok, kv_cache=cache)
    logits = model.decode_step(next_tok, pos, cache)     # (B, V) float32; pos an int or a 0-d long tensor

With a cache, `forward` writes at kv_cache.pos and advances it: a prompt or chunk of T tokens attends over the
pos + T filled slots (SDPA), and one new token goes to `decode_step`, the one-token step (no T axis, two matmuls,
fewer ops: what sampling spends its time in). `decode_step` takes the position as an int (eager: attention over
the pos + 1 filled slots) or as a 0-d tensor (static shapes for compiled decoding on CUDA: the new key/value is
written in place with index_put_ and attention spans all block_size slots under the mask `slot <= pos`, so
torch.compile traces it once and CUDA replays it as a graph; models/sampling.py applies the compilation from
outside). The cache is fp32 unless the caller asks for less (bf16 under CUDA autocast); attention computes in the
model's (or autocast's) dtype.

Device, compile, logging and training live elsewhere. Tested by `python -m pytest tests/test_gpt.py`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = field(default=0, metadata={"help": "vocabulary size in tokens; 0 = taken from the tokenizer"})
    block_size: int = field(default=128, metadata={"help": "context length, tokens"})
    n_layer: int = field(default=4, metadata={"help": "number of transformer blocks"})
    n_head: int = field(default=4, metadata={"help": "attention heads per block"})
    n_embd: int = field(default=128, metadata={"help": "embedding width (channels); divisible by model.n_head"})
    dropout: float = field(default=0.0, metadata={"help": "dropout probability while training, in [0, 1)"})

    def __post_init__(self):
        if self.vocab_size < 0:
            raise ValueError(f"model.vocab_size must be >= 0 (0 = from the tokenizer), got {self.vocab_size}")
        if self.block_size < 2:
            raise ValueError(f"model.block_size must be >= 2, got {self.block_size}")
        if self.n_layer < 1:
            raise ValueError(f"model.n_layer must be >= 1, got {self.n_layer}")
        if self.n_head < 1:
            raise ValueError(f"model.n_head must be >= 1, got {self.n_head}")
        if self.n_embd < 1 or self.n_embd % self.n_head != 0:
            raise ValueError(
                f"model.n_embd must be a positive multiple of model.n_head={self.n_head}, got {self.n_embd}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")


class KVCache:
    """Preallocated keys and values for every layer: kv of shape (n_layer, 2, B, n_head, block_size, head_dim),
    [:, 0] the keys and [:, 1] the values (`k`, `v`: views), so that one copy stores a token's key and value.

    `pos` is the number of tokens already cached (the position of the next token). The model writes
    layer i's new keys and values at [pos, pos + T) and advances `pos` by T after the last layer. The dtype is the
    model's (fp32: the exact path) unless sample.kv_dtype asks for less (bf16 under CUDA autocast): keys and values
    are rounded as they are stored, and attention over the cache computes in the model's (or autocast's) dtype.
    """

    def __init__(self, cfg: GPTConfig, batch_size: int, device=None, dtype=None):
        if batch_size < 1:
            raise ValueError(f"KV cache batch_size must be >= 1, got {batch_size}")
        shape = (cfg.n_layer, 2, batch_size, cfg.n_head, cfg.block_size, cfg.n_embd // cfg.n_head)
        # Zeros, not empty: the static step attends over every slot, and a masked slot's weight 0 times a stale
        # nan would still be nan.
        self.kv = torch.zeros(shape, device=device, dtype=dtype)
        self.batch_size = batch_size
        self.block_size = cfg.block_size
        self.pos = 0

    @property
    def k(self) -> torch.Tensor:
        """The keys, (n_layer, B, n_head, block_size, head_dim): a view of kv."""
        return self.kv[:, 0]

    @property
    def v(self) -> torch.Tensor:
        """The values, (n_layer, B, n_head, block_size, head_dim): a view of kv."""
        return self.kv[:, 1]

    def reset(self) -> None:
        """Forget the cached tokens (the memory is kept and simply overwritten)."""
        self.pos = 0

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep rows `rows` (R,) long of the cache, in that order (beam search; R may differ from batch_size).
        A new tensor: a cache marked static for compiled decoding is never reordered (beams decode eagerly)."""
        self.kv = self.kv.index_select(2, rows)
        self.batch_size = int(rows.numel())


def _dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout, skipped when it is the identity (p = 0 or eval): its call costs ~3 µs, 9 times per forward."""
    return F.dropout(x, p, True) if training and p > 0 else x


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)

    def forward(self, x: torch.Tensor, layer: int, kv_cache: KVCache | None) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C). With a cache, this chunk's keys/values go to slots pos..pos + T - 1 and its
        queries attend over slots 0..pos + T - 1 (one new token against a cache is `step`'s job)."""
        B, T, C = x.shape
        H, D = self.n_head, C // self.n_head
        qkv = self.c_attn(x)  # (B, T, 3C)
        # split, not a (B, T, 3, H, D) permute and unbind: the same values, and backward concatenates the three
        # gradients in one pass where unbind's stack and the permute's copy took two (~1% of a CPU training step)
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in qkv.split(C, dim=2))  # each (B, H, T, D)
        dropout_p = self.dropout if self.training else 0.0
        if kv_cache is not None:  # this chunk's keys and values go to slots pos..pos + T - 1 (in the cache's dtype)
            pos = kv_cache.pos
            kv_cache.kv[layer, :, :, :, pos:pos + T] = qkv.view(B, T, 3, H, D)[:, :, 1:].permute(2, 0, 3, 1, 4)
        if kv_cache is None or kv_cache.pos == 0:  # no cache, or a prefill: plain causal attention
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:  # a chunk after a cached prefix: new token i (at pos + i) sees keys j <= pos + i
            k, v = kv_cache.kv[layer, :, :, :, :pos + T].to(q.dtype).unbind(0)  # (B, H, pos + T, D): cached + new
            rows = torch.arange(T, device=x.device)[:, None] + pos
            mask = torch.arange(pos + T, device=x.device)[None, :] <= rows  # (T, pos + T) bool
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(B, T, C)
        return _dropout(self.c_proj(y), self.dropout, self.training)

    def step(self, x: torch.Tensor, layer: int, pos, mask: torch.Tensor | None, kv_cache: KVCache) -> torch.Tensor:
        """One new token per row (inference): x (B, C) at position pos -> (B, C); writes its key/value into slot
        pos of the cache. Two ways, one result up to float rounding:
        - pos an int, mask None (eager): attends over the pos + 1 filled slots;
        - pos a 0-d long tensor, mask (1, block_size) bool = slot <= pos (compiled): attends over all block_size
          slots, the later ones (zeros or stale keys of an earlier context) at weight exactly 0, so no shape
          depends on pos (one CUDA graph for every step)."""
        B, C = x.shape
        H, D = self.n_head, C // self.n_head
        qkv = self.c_attn(x).view(B, 3, H, D)
        new = qkv[:, 1:].transpose(0, 1).to(kv_cache.kv.dtype)  # (2, B, H, D): this token's key and value
        if mask is None:
            kv_cache.kv[layer, :, :, :, pos] = new
            k, v = kv_cache.kv[layer, :, :, :, :pos + 1].to(qkv.dtype).flatten(1, 2).unbind(0)  # (B·H, pos + 1, D)
            # Two batched matmuls rather than SDPA: for a single query, SDPA's CPU kernel (flash, blocked per batch
            # row and head) ran ~10% slower per decode step (B = 64, 4 x 128, fp32, contexts 1..500,
            # scripts/bench.py's model), with the same tokens sampled. Same softmax(q k^T / sqrt(D)) v, to fp32
            # rounding.
            # baddbmm with beta=0 (its 0-d input ignored) scales inside the product: the same bits as
            # bmm(...).mul_(1 / sqrt(D)) without a second pass over the (B·H, 1, pos + 1) scores (~3% of a decode).
            att = torch.baddbmm(x.new_zeros(()), qkv[:, 0].reshape(B * H, 1, D), k.transpose(1, 2),
                                beta=0.0, alpha=1.0 / math.sqrt(D))
            y = torch.bmm(att.softmax(dim=-1), v)  # (B·H, 1, D)
        else:
            # index_put_ on the whole (n_layer, 2, B, H, block_size, D) cache at [layer, :, :, :, pos]: compiled, it
            # writes 2·B·H·D values in place; index_copy_ on the view kv[layer] (or a slice assignment at a symbolic
            # position) made inductor copy the layer's whole cache.
            at = [torch.full((), layer, dtype=torch.long, device=x.device), None, None, None, pos]
            torch.ops.aten.index_put_(kv_cache.kv, at, new)
            k, v = kv_cache.kv[layer].to(qkv.dtype).unbind(0)  # (B, H, block_size, D)
            y = F.scaled_dot_product_attention(qkv[:, 0, :, None], k, v, attn_mask=mask)  # (B, H, 1, D)
        return self.c_proj(y.view(B, C))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=False)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _dropout(self.c_proj(F.gelu(self.c_fc(x))), self.dropout, self.training)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=False)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=False)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, layer: int, kv_cache: KVCache | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), layer, kv_cache)
        return x + self.mlp(self.ln_2(x))

    def step(self, x: torch.Tensor, layer: int, pos, mask: torch.Tensor | None, kv_cache: KVCache) -> torch.Tensor:
        x = x + self.attn.step(self.ln_1(x), layer, pos, mask, kv_cache)  # (B, C)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig, generator: torch.Generator):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError(f"model.vocab_size must be > 0 to build a model, got {cfg.vocab_size}")
        self.config = cfg
        # Build on the meta device so that no default (global-RNG) init runs, then allocate on CPU
        # and draw every weight from `generator` in a fixed order.
        with torch.device("meta"):
            self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
            self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
            self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
            self.ln_f = nn.LayerNorm(cfg.n_embd, bias=False)
            self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.to_empty(device="cpu")
        self.lm_head.weight = self.wte.weight  # tie after to_empty, which would untie them
        self._init_weights(generator)

    @torch.no_grad()
    def _init_weights(self, generator: torch.Generator) -> None:
        resid_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():  # deterministic order; the tied weight appears once
            if "ln_" in name:
                p.fill_(1.0)
            elif name.endswith("c_proj.weight"):  # residual projections, scaled as in GPT-2/nanoGPT
                nn.init.normal_(p, 0.0, resid_std, generator=generator)
            else:
                nn.init.normal_(p, 0.0, 0.02, generator=generator)

    def new_kv_cache(self, batch_size: int, device=None, dtype=None) -> KVCache:
        """An empty cache on the model's device and dtype unless told otherwise."""
        p = self.wte.weight
        return KVCache(self.config, batch_size, device or p.device, dtype or p.dtype)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                kv_cache: KVCache | None = None, reduction: str = "mean") -> torch.Tensor:
        """idx (B, T) long. Returns logits (B, T, V) float32 without targets; with targets (B, T)
        (-1 = ignore) the cross-entropy in nats/token: a scalar mean ("mean") or (B, T) ("none").
        With a cache, idx continues at kv_cache.pos and the cache advances by T."""
        B, T = idx.shape
        pos0 = 0 if kv_cache is None else kv_cache.pos
        if pos0 + T > self.config.block_size:
            raise ValueError(f"context of {pos0 + T} tokens exceeds model.block_size={self.config.block_size}")
        if kv_cache is not None and kv_cache.batch_size != B:
            raise ValueError(f"KV cache holds {kv_cache.batch_size} rows but idx has {B}")
        if T == 1 and pos0 > 0 and targets is None and not (self.training and self.config.dropout > 0):
            logits = self.decode_step(idx, pos0, kv_cache)  # one new token against a cache: the lean step
            kv_cache.pos += 1
            return logits[:, None]
        pos = torch.arange(pos0, pos0 + T, device=idx.device)
        x = _dropout(self.wte(idx) + self.wpe(pos), self.config.dropout, self.training)  # (B, T, C)
        for i, block in enumerate(self.h):
            x = block(x, i, kv_cache)
        if kv_cache is not None:
            kv_cache.pos += T
        logits = self.lm_head(self.ln_f(x)).float()  # (B, T, V), upcast under autocast
        if targets is None:
            return logits
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T),
                               ignore_index=-1, reduction=reduction)
        return loss if reduction == "mean" else loss.view(B, T)

    def decode_step(self, idx: torch.Tensor, pos, kv_cache: KVCache) -> torch.Tensor:
        """One new token per row (inference, no dropout): idx (B, 1) long, the tokens at position pos; kv_cache
        holds positions 0..pos-1. Writes slot pos of every layer's keys/values, leaves kv_cache.pos alone (the
        caller keeps the count) and returns the next-token logits (B, V) float32, upcast under autocast as in
        forward. Equals forward(idx, kv_cache=cache) with cache.pos == pos up to float rounding. pos is
        - an int (eager; what forward calls for one token): attention spans the pos + 1 filled slots;
        - a 0-d long tensor on the model's device, 0 <= pos < block_size (not checked: that would sync with the
          host): static shapes, attention over all block_size slots under the mask slot <= pos, so one
          torch.compile graph serves every step and CUDA replays it as a graph (models/sampling.py)."""
        if idx.dim() != 2 or idx.size(1) != 1 or kv_cache.kv.size(2) != idx.size(0):
            raise ValueError(f"decode_step takes idx (B, 1) for a cache of B rows, got idx {tuple(idx.shape)} "
                             f"and a cache of {kv_cache.kv.size(2)} rows")
        mask = None
        if isinstance(pos, torch.Tensor):
            mask = (torch.arange(self.config.block_size, device=idx.device) <= pos)[None]  # (1, block_size) bool
        x = self.wte(idx[:, 0]) + self.wpe.weight[pos]  # (B, C) + (C,)
        for i, block in enumerate(self.h):
            x = block.step(x, i, pos, mask, kv_cache)
        return self.lm_head(self.ln_f(x)).float()  # (B, V)

    def num_params(self, exclude_position: bool = False) -> int:
        """Number of parameters (the tied embedding counted once); optionally without wpe."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wpe.weight.numel() if exclude_position else n

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward), nanoGPT/PaLM style: 6N + 12 L C T,
        with N the parameters without position embeddings and T = block_size."""
        c = self.config
        return 6 * self.num_params(exclude_position=True) + 12 * c.n_layer * c.n_embd * c.block_size
