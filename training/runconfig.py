"""The run's config: `RunConfig` composes every component's config (each receives only its own part: GPT or HF
model, trainer, sampler, mix, corpus, tokenizer) with the loop's own `LoopConfig`; `resolve_tokenizer` makes
`tokenizer.kind=auto` concrete for the model kind. Presets (training/presets.py) are functions returning one;
`closedloop run --help` lists every field with its help text. Tested in tests/test_config.py and tests/test_presets.py.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from data.corpus import CorpusConfig
from data.mixing import MixConfig
from data.tokenizer import TokenizerConfig
from models import ModelConfig
from models.sampling import SampleConfig
from training.trainer import TrainConfig

BUDGETS = ("auto", "steps", "epochs")


@dataclass
class LoopConfig:
    generations: int = field(default=5, metadata={"help": "generations to run (generation 0 trains on real data only)"})
    init: str = field(default="warm", metadata={"help": "each generation starts from: warm (model g−1) | scratch (new seeded weights) | pretrained (the same weights every generation: kind hf its pretrained checkpoint, kind gpt generation 0's trained model)"})
    first_steps: int = field(default=0, metadata={"help": "optimizer steps of generation 0, and of every scratch generation (0 = train.steps)"})
    budget: str = field(default="auto", metadata={"help": "training budget per generation: steps (fixed optimizer steps) | epochs (those steps × pool tokens / mix.tokens_per_generation: fixed epochs, more steps as an accumulated pool grows) | auto (epochs under accumulate, steps otherwise); train.epochs overrides it"})
    bleu_docs: int = field(default=100, metadata={"help": "documents (of >= 4 words) samples/self_bleu4 is taken on, every generation; sampling continues until there are this many"})
    eval_tokens: int = field(default=20_000, metadata={"help": "real val tokens scored every generation (fixed windows)"})
    measure_chars: int = field(default=20_000, metadata={"help": "characters of samples measured every generation"})
    truth_chars: int = field(default=20_000, metadata={"help": "fixed true text for truth/excess_bpc, characters (synthetic only)"})
    text_samples: int = field(default=3, metadata={"help": "sample documents shown in TensorBoard per generation"})
    progress: bool = field(default=True, metadata={"help": "progress bars for training and sampling"})

    def __post_init__(self):
        if self.generations < 1:
            raise ValueError(f"loop.generations must be >= 1, got {self.generations}")
        if self.init not in ("warm", "scratch", "pretrained"):
            raise ValueError(f"loop.init must be warm, scratch or pretrained, got {self.init!r}")
        if self.budget not in BUDGETS:
            raise ValueError(f"loop.budget must be one of {', '.join(BUDGETS)}, got {self.budget!r}")
        if self.bleu_docs < 2:
            raise ValueError(f"loop.bleu_docs must be >= 2, got {self.bleu_docs}")
        for name in ("first_steps", "text_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"loop.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("eval_tokens", "measure_chars", "truth_chars"):
            if getattr(self, name) < 100:
                raise ValueError(f"loop.{name} must be >= 100, got {getattr(self, name)}")


@dataclass
class RunConfig:
    seed: int = field(default=0, metadata={"help": "seed of the run: init, training windows, sampling, fresh real data"})
    loop: LoopConfig = field(default_factory=LoopConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    mix: MixConfig = field(default_factory=MixConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)


def resolve_tokenizer(cfg: RunConfig) -> RunConfig:
    """tokenizer.kind=auto -> char for the built-in GPT, the model's own (pretrained, model.name) for kind hf; an
    explicit char or bpe tokenizer cannot feed a Hugging Face model (its ids are the model's)."""
    t, m = cfg.tokenizer, cfg.model
    if m.kind == "hf":
        if t.kind in ("char", "bpe"):
            raise ValueError(f"model.kind=hf reads its own tokenizer's ids, not tokenizer.kind={t.kind}; drop "
                             "--tokenizer.kind (auto loads model.name's tokenizer)")
        if t.kind == "auto" or not t.name:
            t = dataclasses.replace(t, kind="pretrained", name=t.name or m.name)
    elif t.kind == "auto":
        t = dataclasses.replace(t, kind="char")
    return dataclasses.replace(cfg, tokenizer=t)
