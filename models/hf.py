"""Any Hugging Face causal LM behind the built-in GPT's contract (`model.kind=hf`); transformers imported lazily.

    cfg = ModelConfig(kind="hf", name="facebook/opt-125m", block_size=128, vocab_size=len_of_tokenizer)
    model = build_hf(cfg, generator, scratch=False)      # or models.build_model(cfg, generator)
    logits = model(idx)                                  # (B, T, V) float32, V = cfg.vocab_size
    loss = model(idx, targets)                           # scalar, nats/token (targets -1 ignored)
    nats = model(idx, targets, reduction="none")         # (B, T)
    cache = model.new_kv_cache(B); model(prompt, kv_cache=cache); model(next_tok, kv_cache=cache)

`HFCausalLM` wraps an `AutoModelForCausalLM` (GPT-2, OPT, GPT-NeoX/Pythia, Llama-style such as SmolLM2, ...):
- `config` is the run's ModelConfig: `block_size` is the context the loop uses (at most the checkpoint's maximum
  positions, checked by `check`), `vocab_size` the tokenizer's. Logits are cut to the first vocab_size columns:
  checkpoints often pad their embedding (OPT-125m: 50,272 rows for 50,265 tokens) and a padded id has no text, so
  it must never be sampled or counted.
- The KV cache (`HFKVCache`) holds HF's own `DynamicCache` and the position count `pos` the sampler reads; the
  cache grows by one token per step and is reordered in place for beam search (`reorder`). There is no static
  `decode_step`, so models/sampling.py decodes these models eagerly (as HF `generate` does by default).
- Weights: `build_hf(cfg, generator)` loads the checkpoint's pretrained weights in fp32 (autocast supplies bf16 on
  CUDA); `scratch=True` builds the architecture from its config with new weights, HF's own init run under torch's
  global generator seeded from one draw of `generator` (forked, so the caller's global state is untouched).
- `flops_per_token` approximates 6N + 12·L·C·T (N parameters without position embeddings, T = block_size) for MFU.
A local folder is read as is; a hub id is downloaded to the HF cache, or, with no network, loaded from the cache or
refused at once with one line (data/hfcorpus.py's probe). Tested in tests/test_hf.py.
"""
from __future__ import annotations

import functools
import inspect
import os
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_POSITION = re.compile(r"(^|\.)(wpe|embed_positions|position_embeddings)\.")


def _transformers():
    try:
        import transformers
    except ImportError:
        raise ValueError("model.kind=hf needs `transformers`: pip install -e '.[hf]'") from None
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # "Loading weights" bars: noise in a run's log
    return transformers


def _cache_only(name: str) -> bool:
    """False for a local folder or a reachable hub; True (offline mode switched on) for a hub id without network."""
    if os.path.exists(name):
        return False
    from data.hfcorpus import hub_reachable, set_offline

    if hub_reachable():
        return False
    set_offline()
    return True


def _fail(name: str, offline: bool, e: BaseException) -> ValueError:
    if offline:
        return ValueError(f"cannot load model.name={name!r}: the Hugging Face hub is not reachable and it is not in "
                          "the cache; pass a local folder with --model.name=DIR")
    first = (str(e).strip().splitlines() or [""])[0]
    return ValueError(f"cannot load model.name={name!r}: {type(e).__name__}: {first}")


@functools.lru_cache(maxsize=8)
def hf_config(name: str):
    """The checkpoint's own config (transformers.PretrainedConfig); one clear ValueError when it cannot be had."""
    tf = _transformers()
    if os.path.exists(name):
        if not os.path.isdir(name):
            raise ValueError(f"model.name={name!r} is a file; pass the folder holding config.json and the weights")
        missing = [f for f in ("config.json",) if not os.path.exists(os.path.join(name, f))]
        if missing or not any(os.path.exists(os.path.join(name, f)) for f in WEIGHT_FILES):
            raise ValueError(f"model.name={name!r} is not a saved model: it needs config.json and weights "
                             f"({' or '.join(WEIGHT_FILES[::2])}), as written by save_pretrained")
    offline = _cache_only(name)
    try:
        return tf.AutoConfig.from_pretrained(name, local_files_only=offline)
    except Exception as e:  # noqa: BLE001: OSError, ValueError, hub errors: all one line
        raise _fail(name, offline, e) from None


def max_positions(config) -> int | None:
    """The longest context the checkpoint was built for (None when its config does not say)."""
    text = config.get_text_config(decoder=True)
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length"):
        v = getattr(text, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def check(cfg) -> dict:
    """Validate model.kind=hf before anything is written: the checkpoint exists and model.block_size fits it.
    Returns {"max_positions", "vocab_rows"} of the checkpoint."""
    config = hf_config(cfg.name)
    limit = max_positions(config)
    if limit is not None and cfg.block_size > limit:
        raise ValueError(f"model.block_size={cfg.block_size} exceeds the {limit} positions of model.name={cfg.name!r}")
    rows = getattr(config.get_text_config(decoder=True), "vocab_size", None)
    return {"max_positions": limit, "vocab_rows": rows}


def build_hf(cfg, generator: torch.Generator, scratch: bool = False) -> "HFCausalLM":
    """The checkpoint `cfg.name` on the CPU in fp32: pretrained weights, or (scratch) new ones from `generator`."""
    tf = _transformers()
    config = hf_config(cfg.name)
    if scratch:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):  # HF draws its init from the global CPU generator
            torch.manual_seed(seed)
            hf = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    else:
        offline = _cache_only(cfg.name)
        try:
            hf = tf.AutoModelForCausalLM.from_pretrained(cfg.name, dtype=torch.float32, local_files_only=offline)
        except Exception as e:  # noqa: BLE001
            raise _fail(cfg.name, offline, e) from None
    return HFCausalLM(hf, cfg)


class HFKVCache:
    """HF's DynamicCache for B rows, created at the first (prefill) call, and the number of tokens it holds (pos)."""

    def __init__(self, batch_size: int, block_size: int):
        if batch_size < 1:
            raise ValueError(f"KV cache batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.block_size = batch_size, block_size
        self.pos, self.cache = 0, None

    def reset(self) -> None:
        """Forget the cached tokens (the next call prefills a new cache)."""
        self.pos, self.cache = 0, None

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep rows `rows` (R,) long of the cache, in that order (beam search): R may differ from batch_size."""
        if self.cache is not None:
            self.cache.reorder_cache(rows)
        self.batch_size = int(rows.numel())


class HFCausalLM(nn.Module):
    """An AutoModelForCausalLM with the models/ forward contract (see the module docstring)."""

    compile_by_default = False  # train.compile=auto leaves HF models eager (not measured on a GPU here)

    def __init__(self, hf: nn.Module, cfg):
        super().__init__()
        rows = hf.get_input_embeddings().weight.shape[0]
        if cfg.vocab_size <= 0:
            raise ValueError(f"model.vocab_size must be > 0 to build a model, got {cfg.vocab_size}")
        if cfg.vocab_size > rows:
            raise ValueError(f"the tokenizer has {cfg.vocab_size} tokens but model.name={cfg.name!r} embeds only "
                             f"{rows}; use the model's own tokenizer")
        self.hf, self.config = hf, cfg
        # The cache keyword of forward: transformers 5.2x names it `cache` (`past_key_values` deprecated), earlier
        # releases (5.17 on our GPU machine) `past_key_values`; a misspelt keyword would vanish into **kwargs and
        # every step would see one token at position 0, without an error.
        params = inspect.signature(hf.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    def new_kv_cache(self, batch_size: int, device=None, dtype=None) -> HFKVCache:
        """An empty cache; HF keeps keys/values in the compute dtype (device and dtype are the model's)."""
        return HFKVCache(batch_size, self.config.block_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                kv_cache: HFKVCache | None = None, reduction: str = "mean") -> torch.Tensor:
        """idx (B, T) long -> logits (B, T, V) float32; with targets (B, T) (-1 = ignore) the cross-entropy in
        nats/token, a scalar ("mean") or (B, T) ("none"). With a cache, idx continues at kv_cache.pos."""
        B, T = idx.shape
        pos0 = 0 if kv_cache is None else kv_cache.pos
        if pos0 + T > self.config.block_size:
            raise ValueError(f"context of {pos0 + T} tokens exceeds model.block_size={self.config.block_size}")
        if kv_cache is None:
            out = self.hf(input_ids=idx, use_cache=False)
        else:
            if kv_cache.batch_size != B:
                raise ValueError(f"KV cache holds {kv_cache.batch_size} rows but idx has {B}")
            if kv_cache.pos == 0:
                kv_cache.cache = _transformers().DynamicCache(config=self.hf.config)
            out = self.hf(input_ids=idx, use_cache=True, **{self._cache_arg: kv_cache.cache})  # positions: cache length
            kv_cache.pos += T
        logits = out.logits[..., :self.config.vocab_size].float()  # (B, T, V), padded embedding rows dropped
        if targets is None:
            return logits
        if reduction not in ("mean", "none"):
            raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
        loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T), ignore_index=-1, reduction=reduction)
        return loss if reduction == "mean" else loss.view(B, T)

    def set_grad_checkpointing(self, on: bool) -> None:
        """Recompute each layer's activations in the backward pass (less memory, ~1/3 more compute)."""
        # activation_* is transformers 5.2x's name; gradient_* the earlier one
        name = "activation" if hasattr(self.hf, "activation_checkpointing_enable") else "gradient"
        getattr(self.hf, f"{name}_checkpointing_{'enable' if on else 'disable'}")()

    def num_params(self, exclude_position: bool = False) -> int:
        """Parameters (tied weights counted once); optionally without learned position embeddings."""
        n = sum(p.numel() for p in self.parameters())
        if exclude_position:
            n -= sum(p.numel() for name, p in self.named_parameters() if _POSITION.search(name))
        return n

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward + backward), approximately 6N + 12 L C T, T = block_size."""
        text = self.hf.config.get_text_config(decoder=True)
        return 6 * self.num_params(exclude_position=True) + 12 * text.num_hidden_layers * text.hidden_size * \
            self.config.block_size
