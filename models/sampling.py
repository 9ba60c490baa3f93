"""Sampling from a model of models/ (the built-in GPT or the HF adapter): next-token rule, batched KV-cache
decoding, prompted continuations, and a slow reference.

    docs = generate_documents(model, 100, SampleConfig(temperature=0.8), eot_id, torch.Generator().manual_seed(0))
    conts = generate_continuations(model, prompts, SampleConfig(prompt_tokens=64), eot_id, generator)  # (N, 64)

Every document starts from the prompt [eot_id] (EOT doubles as BOS) and ends when the model emits
EOT (not kept) or after `max_new_tokens` tokens. Up to `batch_size` documents decode together: one
prefill, then one token per step from a preallocated KV cache. A prompted continuation starts from its K-token
prompt (no EOT before it) and has exactly K tokens unless the model emits EOT first (it ends there, EOT not kept).
sample.repetition_penalty reshapes the logits before the sampling rule; sample.num_beams > 1 decodes by beam
search instead (deterministic, no random draws): both in models/decoding.py. At their defaults (1) neither runs, and
the random stream is consumed exactly as before they existed.

Context policy (shared by both paths, so they agree exactly): the model sees at most block_size
tokens. When appending a token would make the context block_size + 1 tokens long, the context is cut
to its last block_size // 2 tokens and the cache is rebuilt by prefilling those. All rows of a batch
have the same length, so this happens for the whole batch at once.

Compiled decoding (sample.compile: auto = on CUDA only, true = also on a CPU, false = never): the per-token
steps go through `torch.compile(GPT.decode_step)`, the model's one-token step with static shapes (the position is
a 0-d tensor; attention spans all block_size cache slots under a mask). On CUDA it runs in mode "reduce-overhead",
so each step replays one CUDA graph. The compiled function is made once per model and device (`_STATIC`, weakly
keyed: it is freed with the model). The prefill and the cache rebuild after a context cut stay on the eager
dynamic `forward`; the compiled steps continue from the rebuilt cache's position (cache.pos, kept on the Python
side). The KV caches of the last two batch sizes are kept with the model's compiled step and, on CUDA, marked as
static addresses, so a CUDA graph reads and writes them in place without re-recording (memory held until the model
is freed, and up to one partial batch's cache beyond sample.max_batch_memory_mb). A CUDA-graph output is
overwritten by the next replay: each step's logits are consumed by `sample_next_token` before the next step
starts. If "auto" fails to compile (no Triton), decoding warns once and stays eager for that model; "true" lets
the error surface.

KV cache dtype (sample.kv_dtype, `kv_cache_dtype`): auto keeps keys/values in the autocast dtype under CUDA
autocast (bf16) and in the model's dtype (fp32) everywhere else, so the same command and seed sample the same
documents on every CPU. fp32 is the exact path: the cached decode equals the full recompute (`generate_reference`)
up to fp32 summation order. fp16/bf16 are explicit opt-ins that round keys and values as they are stored
(attention still computes in the model's dtype).

Randomness: one `sample_next_token` call per step for the whole batch (finished rows included), and
both paths check "all rows finished" only every CHECK_EVERY steps, so the fast path and
`generate_reference` consume the generator identically. If the generator is on another device than
the model (a CPU generator with a CUDA model), one seed is drawn from it to seed a generator on the
model's device, so the draws stay on the device without a host sync per step.

Tested by `pytest tests/test_sampling.py`.
"""
from __future__ import annotations

import contextlib
import math
import warnings
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from models.decoding import apply_repetition_penalty, beam_decode
from models.gpt import KVCache

CHECK_EVERY = 16  # decode steps between host-side "all finished?" checks (each check syncs)
KV_DTYPES = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class SampleConfig:
    temperature: float = field(default=1.0, metadata={"help": "softmax temperature T; 0 = greedy (argmax)"})
    top_k: int = field(default=0, metadata={"help": "keep only the k most likely tokens; 0 = off"})
    top_p: float = field(default=1.0, metadata={"help": "nucleus: smallest set of tokens with mass >= p, in (0, 1]"})
    max_new_tokens: int = field(default=256, metadata={"help": "length cap of one document, tokens"})
    batch_size: int = field(default=64, metadata={"help": "documents decoded together"})
    max_batch_memory_mb: int = field(default=0, metadata={"help": "automatic batch size: the most documents whose KV cache and decode buffers fit in this many MiB (estimate from the model's dimensions; never above sample.batch_size); 0 = off"})
    compile: str = field(default="auto", metadata={"help": "torch.compile the one-token decode step (CUDA graphs on CUDA): auto (on CUDA only) | true (also on a CPU) | false"})
    kv_dtype: str = field(default="auto", metadata={"help": "KV cache dtype: auto (bf16 under CUDA autocast, else the model's: fp32) | fp32 (exact: the cached path matches the full recompute) | fp16 | bf16 (opt-in: keys/values rounded as stored; attention computes in the model's dtype)"})
    num_beams: int = field(default=1, metadata={"help": "beam search with this many beams: deterministic, the most likely continuation (temperature, top_k, top_p unused); 1 = sampling"})
    repetition_penalty: float = field(default=1.0, metadata={"help": "CTRL/HF penalty θ on ids already in the context: positive logits / θ, negative × θ; 1 = off"})
    prompt_tokens: int = field(default=0, metadata={"help": "K > 0: prompted generation: each K-token block of generation 0's real training text is continued by up to K tokens (the continuations are the samples; sample.max_new_tokens unused); 0 = unconditional documents"})

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
        if self.compile not in ("auto", "true", "false"):
            raise ValueError(f"sample.compile must be auto, true or false, got {self.compile!r}")
        if self.kv_dtype not in KV_DTYPES:
            raise ValueError(f"sample.kv_dtype must be one of {', '.join(KV_DTYPES)}, got {self.kv_dtype!r}")
        if self.num_beams < 1:
            raise ValueError(f"sample.num_beams must be >= 1 (1 = sampling), got {self.num_beams}")
        if not (self.repetition_penalty > 0 and math.isfinite(self.repetition_penalty)):
            raise ValueError(f"sample.repetition_penalty must be a finite number > 0 (1 = off), got {self.repetition_penalty}")
        if self.prompt_tokens < 0:
            raise ValueError(f"sample.prompt_tokens must be >= 0 (0 = unconditional documents), got {self.prompt_tokens}")

    @property
    def doc_cap(self) -> int:
        """The most tokens one sample can have: K for prompted continuations, else max_new_tokens."""
        return self.prompt_tokens or self.max_new_tokens


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
    choice = draw(probs, generator)  # (B, 1), index into the columns
    if ids is not None:
        choice = ids.gather(-1, choice)
    return choice.squeeze(-1)


def draw(weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One column per row of weights (B, V) >= 0 (not all zero), with probability weight / row sum: (B, 1) long.

    Inverse-CDF sampling: one uniform u per row, the first column whose cumulative weight exceeds u × the row's total.
    The cumulative sums are fp64, so their rounding (at most V · 2⁻⁵³ of the total) is far below any probability
    that matters. torch.multinomial draws an exponential variate for every one of the B · V entries instead
    (argmax of weight / Exp(1)): 72 against 11 µs per step at B = 64, V = 65 on the 2-core bench machine, and
    45 ms against 1.2 ms at V = 50,257 (a GPT-2 vocabulary). On a CPU a column of weight 0 is never drawn: the
    cumulative sum is sequential, so a zero column's equals its left neighbour's exactly, and u × total stays below
    the total (clamped as well); CUDA's parallel scan may round such a column ~1e-16 of the total wide."""
    cdf = weights.double().cumsum(dim=-1)  # (B, V)
    total = cdf[:, -1:]  # (B, 1)
    if weights.device.type == "cpu" and not bool((torch.isfinite(total) & (total > 0)).all()):  # (CUDA would sync)
        raise ValueError("sampling: the next-token probabilities contain nan or inf, or are all 0 "
                         "(did the model diverge?)")
    u = torch.rand(total.shape, dtype=torch.float64, device=weights.device, generator=generator)  # [0, 1)
    x = torch.minimum(u * total, torch.nextafter(total, torch.zeros_like(total)))  # < total even after rounding
    return torch.searchsorted(cdf, x, right=True)  # first column with cdf > x: its weight is > 0


def kv_cache_dtype(cfg: SampleConfig, model: nn.Module, device: torch.device) -> torch.dtype:
    """The dtype the KV cache is kept in: sample.kv_dtype, or for auto the autocast dtype where autocast is on
    (bf16 on CUDA), else the model's dtype (fp32: the exact path, the same on every CPU)."""
    if cfg.kv_dtype != "auto":
        return KV_DTYPES[cfg.kv_dtype]
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return next(model.parameters()).dtype


def _device_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """The generator itself if it lives on `device`, else a new one there seeded from it (one draw)."""
    if generator.device.type == device.type:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


class _StaticStep:
    """One model's compiled decode step on one device, with the KV caches and position tensor it reuses."""

    KEEP = 2  # caches kept per model: a full batch size and the last partial one, so addresses stay put

    def __init__(self, model: nn.Module, device: torch.device):
        # The unbound function, so that this object (kept in _STATIC) holds no reference to the model.
        self.cuda_graphs = device.type == "cuda"
        # Static shapes (all block_size slots under a mask): one graph for every step, replayed as a CUDA graph.
        self.fn = (torch.compile(type(model).decode_step, mode="reduce-overhead") if self.cuda_graphs
                   else torch.compile(type(model).decode_step))
        self.failed = False  # compilation failed under sample.compile=auto: this model decodes eagerly
        self.caches: dict[tuple, KVCache] = {}  # (rows, dtype, device) -> cache, least recently used first
        self.pos = self._static(torch.zeros((), dtype=torch.long, device=device))  # 0-d, filled per step

    def _static(self, t: torch.Tensor) -> torch.Tensor:
        if self.cuda_graphs:  # a fixed address: the CUDA graph reads and writes the tensor in place, no copy
            torch._dynamo.mark_static_address(t)
        return t

    def new_cache(self, model: nn.Module, n: int, device: torch.device, dtype: torch.dtype) -> KVCache:
        """A kept cache of n rows of this dtype on this device, else a new one (kept in place of the oldest)."""
        key = (n, dtype, device)
        cache = self.caches.pop(key, None)
        if cache is None:
            while len(self.caches) >= self.KEEP:
                self.caches.pop(next(iter(self.caches)))  # free before allocating
            cache = model.new_kv_cache(n, device=device, dtype=dtype)
            self._static(cache.kv)
        self.caches[key] = cache  # now the most recently used
        cache.reset()
        return cache

    def __call__(self, model: nn.Module, idx: torch.Tensor, cache: KVCache, strict: bool) -> torch.Tensor | None:
        """Next-token logits (n, V) for idx (n, 1) at position cache.pos, which then advances by one; None
        (after one warning) if compilation failed and not strict."""
        self.pos.fill_(cache.pos)  # a device-side fill, no host-to-device copy or sync
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's logits are consumed by now
        try:
            logits = self.fn(model, idx, self.pos, cache)
        except Exception as e:  # noqa: BLE001: any compiler failure (inductor, missing C++ compiler or Triton)
            if strict:
                raise
            self.failed = True
            warnings.warn(f"sample.compile=auto: compiling the decode step failed, decoding eagerly instead "
                          f"({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})",
                          RuntimeWarning, stacklevel=2)
            return None
        cache.pos += 1
        return logits


_STATIC: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {device: _StaticStep}


def _static_step(model: nn.Module, cfg: SampleConfig, device: torch.device) -> _StaticStep | None:
    """The model's compiled step if sample.compile resolves on for this device, else None (eager)."""
    if cfg.compile == "false" or (cfg.compile == "auto" and device.type != "cuda"):
        return None
    if not callable(getattr(type(model), "decode_step", None)):
        if cfg.compile == "true":
            raise ValueError(f"sample.compile=true needs a model with decode_step, got {type(model).__name__}")
        return None
    steps = _STATIC.setdefault(model, {})
    if device not in steps:
        steps[device] = _StaticStep(model, device)
    step = steps[device]
    return None if step.failed and cfg.compile == "auto" else step


def _to_documents(tokens: torch.Tensor, eot_id: int, prompt_len: int = 1) -> list[np.ndarray]:
    """(B, prompt_len + n) ids on any device, prompt first -> per row the new tokens before the first EOT."""
    gen = tokens[:, prompt_len:].cpu().numpy().astype(np.int64)
    docs = []
    for row in gen:
        ends = np.flatnonzero(row == eot_id)
        docs.append(row[: ends[0]] if len(ends) else row)
    return docs


def _decode_batch(model: nn.Module, n: int, cfg: SampleConfig, eot_id: int,
                  generator: torch.Generator, device: torch.device, use_cache: bool,
                  stop_at_eot: bool = True, static: _StaticStep | None = None,
                  prompts: torch.Tensor | None = None) -> torch.Tensor:
    """Decode n rows from the prompt [eot_id], or from `prompts` (n, K) long on `device` (then up to K new
    tokens). Returns ids (n, prompt length + steps) with the prompt first.

    use_cache=False is the slow reference: full recompute of the current context every step.
    stop_at_eot=False always decodes max_new_tokens steps (benchmarks: a fixed amount of work).
    static: the compiled one-token step (see `_static_step`); None = the eager dynamic forward.
    sample.num_beams > 1 hands the batch to beam search (models/decoding.py: deterministic, no draws).
    """
    if prompts is None:
        prompts = torch.full((n, 1), eot_id, dtype=torch.long, device=device)
        max_new = cfg.max_new_tokens
    else:
        max_new = prompts.size(1)  # a K-token prompt is continued by up to K tokens
    if cfg.num_beams > 1:
        kv = kv_cache_dtype(cfg, model, device) if use_cache else None
        return beam_decode(model, prompts, max_new, cfg.num_beams, eot_id, cfg.repetition_penalty, use_cache, kv,
                           stop_at_eot)
    block = model.config.block_size
    half = block // 2
    P = prompts.size(1)
    tokens = torch.empty(n, P + max_new, dtype=torch.long, device=device)
    tokens[:, :P] = prompts
    length, start = P, 0  # tokens[:, :length] so far; the model's context is tokens[:, start:length]
    done = torch.zeros(n, dtype=torch.bool, device=device)
    strict = cfg.compile == "true"
    if static is not None and static.failed and not strict:
        static = None  # compiling failed in an earlier batch: eager, without another warning
    cache = None
    if use_cache:
        kv = kv_cache_dtype(cfg, model, device)
        cache = static.new_cache(model, n, device, kv) if static else model.new_kv_cache(n, device=device, dtype=kv)

    def logits_now(new: torch.Tensor | None) -> torch.Tensor:
        """(n, V) next-token logits for the current context; new: the (n,) tokens just appended, whose
        keys/values the cache still lacks, or None to (re)build the cache from the whole context window."""
        nonlocal static
        if not use_cache:
            return model(tokens[:, start:length])[:, -1]
        if new is None:
            cache.reset()  # eager dynamic prefill, any length
            return model(tokens[:, start:length], kv_cache=cache)[:, -1]
        if static is not None:
            # new as (n, 1): a fresh contiguous tensor each step, so the compiled graph sees one layout
            logits = static(model, new[:, None], cache, strict)
            if logits is not None:
                return logits
            static = None  # compilation failed under auto: eager from here on
        return model(new[:, None], kv_cache=cache)[:, -1]

    logits = logits_now(None)
    for step in range(1, max_new + 1):
        if cfg.repetition_penalty != 1.0:  # before temperature, top-k and top-p, as in HF
            logits = apply_repetition_penalty(logits, tokens[:, start:length], cfg.repetition_penalty)
        nxt = sample_next_token(logits, cfg.temperature, cfg.top_k, cfg.top_p, generator)  # (n,)
        tokens[:, length] = nxt
        length += 1
        done |= nxt == eot_id  # finished rows keep decoding; their tokens after EOT are dropped
        if step == max_new or (stop_at_eot and step % CHECK_EVERY == 0 and bool(done.all())):
            break
        if length - start > block:  # context would exceed block_size: keep its last half
            start = length - half
            logits = logits_now(None)
        else:
            logits = logits_now(nxt)
    return tokens[:, :length]


@contextlib.contextmanager
def _decoding(model: nn.Module, cfg: SampleConfig, generator: torch.Generator, device, use_cache: bool):
    """One sampling call's setup: yields (device, generator, compiled step or None) with the device defaulting to
    the model's, the generator moved there, and the model in eval and inference mode (its mode restored after)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    generator = _device_generator(generator, device)
    static = _static_step(model, cfg, device) if use_cache else None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield device, generator, static
    finally:
        model.train(was_training)


def _generate(model, n_docs, cfg, eot_id, generator, device, use_cache, prompts=None):
    if prompts is not None:
        n_docs = len(prompts)
    if n_docs < 0:
        raise ValueError(f"number of documents must be >= 0, got {n_docs}")
    if not 0 <= eot_id < model.config.vocab_size:
        raise ValueError(f"eot_id {eot_id} is outside the vocabulary of size {model.config.vocab_size}")
    if prompts is not None and not 1 <= prompts.shape[1] <= model.config.block_size // 2:
        raise ValueError(f"prompts of {prompts.shape[1]} tokens: a prompt and its continuation of as many tokens "
                         f"must fit model.block_size={model.config.block_size}, so 1 <= K <= block_size // 2")
    docs: list[np.ndarray] = []
    with _decoding(model, cfg, generator, device, use_cache) as (device, generator, static):
        elem = (kv_cache_dtype(cfg, model, device) if use_cache
                else next(model.parameters()).dtype).itemsize
        batch_size = auto_batch_size(model.config, cfg, elem)
        for first in range(0, n_docs, batch_size):
            n = min(batch_size, n_docs - first)
            rows = None if prompts is None else \
                torch.as_tensor(np.asarray(prompts[first:first + n], dtype=np.int64), device=device)
            ids = _decode_batch(model, n, cfg, eot_id, generator, device, use_cache, static=static, prompts=rows)
            docs.extend(_to_documents(ids, eot_id, 1 if rows is None else rows.size(1)))
    return docs


def generate_documents(model: nn.Module, n_docs: int, cfg: SampleConfig, eot_id: int,
                       generator: torch.Generator, device=None) -> list[np.ndarray]:
    """Sample n_docs documents (int64 token ids, EOT not included) with a KV cache, batch_size at a
    time. device defaults to the model's."""
    return _generate(model, n_docs, cfg, eot_id, generator, device, use_cache=True)


def generate_continuations(model: nn.Module, prompts: np.ndarray, cfg: SampleConfig, eot_id: int,
                           generator: torch.Generator, device=None) -> list[np.ndarray]:
    """Prompted generation: prompts (N, K) int -> per prompt its continuation of up to K tokens (exactly K unless
    the model emits EOT first: the continuation ends there, EOT not included), batch_size prompts at a time, with
    the KV cache. The prompt is the context (no EOT before it); K <= model.block_size // 2."""
    return _generate(model, len(prompts), cfg, eot_id, generator, device, use_cache=True, prompts=prompts)


def decode(model: nn.Module, n: int, cfg: SampleConfig, eot_id: int, generator: torch.Generator,
           device=None, use_cache: bool = True, stop_at_eot: bool = True) -> torch.Tensor:
    """One batch of n rows as raw ids (n, 1 + steps), prompt [eot_id] first, tokens after EOT kept.
    use_cache=False is the full-recompute path (nanoGPT's way); stop_at_eot=False decodes exactly
    max_new_tokens steps whatever is sampled (what scripts/bench.py times). cfg.compile applies as in
    generate_documents."""
    with _decoding(model, cfg, generator, device, use_cache) as (device, generator, static):
        return _decode_batch(model, n, cfg, eot_id, generator, device, use_cache, stop_at_eot, static)


def generate_reference(model: nn.Module, n_docs: int, cfg: SampleConfig, eot_id: int,
                       generator: torch.Generator, device=None, prompts: np.ndarray | None = None) -> list[np.ndarray]:
    """Slow reference for tests: no cache, full recompute each step, same context policy and the
    same generator consumption, so it matches generate_documents (or, with prompts, generate_continuations)
    token for token (fp32)."""
    return _generate(model, n_docs, cfg, eot_id, generator, device, use_cache=False, prompts=prompts)
