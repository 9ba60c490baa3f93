"""Every named preset builds, validates and survives a round trip through config.json; debug is CPU-fast.

Run: `make test`.
"""
import pytest

from training import presets
from training.config import from_dict, to_dict
from training.runconfig import RunConfig


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_preset_builds_and_round_trips(name):
    cfg = presets.get(name)
    assert isinstance(cfg, RunConfig)
    assert from_dict(RunConfig, to_dict(cfg)) == cfg
    # One generation's training set must hold at least one training window.
    assert cfg.mix.tokens_per_generation > cfg.model.block_size


def test_debug_is_small():
    cfg = presets.debug()
    assert cfg.model.n_layer * cfg.model.n_embd <= 64 and cfg.mix.tokens_per_generation <= 10_000


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset"):
        presets.get("huge")


def test_presets_are_fresh_objects():
    a = presets.get("debug")
    a.loop.generations = 99  # a caller changing its copy must not change the preset
    assert presets.get("debug").loop.generations != 99
