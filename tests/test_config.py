"""Tests for training/config.py: flattening, dotted overrides with type parsing, help text, round trips, diffs.

Run: python -m pytest tests/test_config.py -q
"""
from __future__ import annotations

import dataclasses
import json

import pytest

from training.config import apply_overrides, diff, flatten, from_dict, help_lines, parse_value, to_dict
from training.runconfig import RunConfig


def test_flatten_names_nested_sections_in_declaration_order():
    cfg = RunConfig()
    flat = flatten(cfg)
    keys = list(flat)
    assert keys[0] == "seed"
    assert flat["sample.temperature"] == cfg.sample.temperature
    assert flat["corpus.synthetic.vocab_size"] == cfg.corpus.synthetic.vocab_size
    # Only leaves: no nested dataclass is a value.
    assert not any(dataclasses.is_dataclass(v) for v in flat.values())
    # Declaration order inside a section is kept.
    model_keys = [k for k in keys if k.startswith("model.")]
    assert model_keys == ["model." + f.name for f in dataclasses.fields(cfg.model)]


@pytest.mark.parametrize("text,expected", [("7", 7), ("2e5", 200_000), ("1_000", 1000), ("3.0", 3), ("-4", -4)])
def test_int_parsing_accepts_whole_numbers(text, expected):
    v = parse_value(text, int, "train.steps")
    assert v == expected and type(v) is int


@pytest.mark.parametrize("text", ["1.5", "abc", "inf", "nan", "2e-1"])
def test_int_parsing_rejects_non_integers_naming_the_option(text):
    with pytest.raises(ValueError, match="train.steps"):
        parse_value(text, int, "train.steps")


def test_float_bool_str_parsing():
    assert parse_value("0.25", float, "mix.fresh_fraction") == 0.25
    assert parse_value("1e-3", float, "train.lr") == 1e-3
    assert type(parse_value("2", float, "train.lr")) is float
    with pytest.raises(ValueError, match="train.lr"):
        parse_value("fast", float, "train.lr")
    with pytest.raises(ValueError, match="train.lr"):
        parse_value("nan", float, "train.lr")
    for t in ("true", "True", "1", "yes", "on"):
        assert parse_value(t, bool, "loop.progress") is True
    for t in ("false", "FALSE", "0", "no", "off"):
        assert parse_value(t, bool, "loop.progress") is False
    with pytest.raises(ValueError, match="loop.progress"):
        parse_value("maybe", bool, "loop.progress")
    assert parse_value("2e5", str, "corpus.path") == "2e5"


def test_apply_overrides_parses_each_type_and_leaves_original_untouched():
    cfg = RunConfig()
    new = apply_overrides(cfg, {
        "train.steps": "2e3", "train.lr": "0.01", "loop.progress": "false", "mix.workflow": "accumulate",
        "corpus.synthetic.vocab_size": "50", "seed": "3",
    })
    assert new.train.steps == 2000 and type(new.train.steps) is int
    assert new.train.lr == 0.01
    assert new.loop.progress is False
    assert new.mix.workflow == "accumulate"
    assert new.corpus.synthetic.vocab_size == 50
    assert new.seed == 3
    # Untouched fields keep their defaults; the original is not mutated.
    assert new.train.batch_size == cfg.train.batch_size
    assert new.corpus.synthetic.zipf == cfg.corpus.synthetic.zipf
    assert cfg == RunConfig()
    assert apply_overrides(cfg, {}) == cfg


def test_apply_overrides_rejects_non_integer_for_int_field():
    with pytest.raises(ValueError, match="train.steps"):
        apply_overrides(RunConfig(), {"train.steps": "1.5"})


def test_unknown_key_error_names_the_option():
    with pytest.raises(ValueError, match=r"--train\.stepz"):
        apply_overrides(RunConfig(), {"train.stepz": "10"})
    # A known leaf name under the wrong section gets a hint to the right one.
    with pytest.raises(ValueError, match=r"did you mean --sample\.temperature"):
        apply_overrides(RunConfig(), {"temperature": "0.5"})
    # A section itself is not an option.
    with pytest.raises(ValueError, match="unknown option"):
        apply_overrides(RunConfig(), {"sample": "1"})


@pytest.mark.parametrize("key,value", [
    ("sample.temperature", "-1"),
    ("train.steps", "0"),
    ("mix.fresh_fraction", "1.5"),
    ("loop.init", "cold"),
    ("corpus.synthetic.vocab_size", "3"),
])
def test_validation_errors_propagate_with_option_name(key, value):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        apply_overrides(RunConfig(), {key: value})


def test_every_option_accepts_its_own_default_as_text():
    """Every field has a plain parseable type: overriding each with its shown default changes nothing."""
    cfg = RunConfig()
    flat = flatten(cfg)
    texts = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in flat.items()}
    assert apply_overrides(cfg, texts) == cfg


def test_round_trip_through_dict_and_json():
    cfg = apply_overrides(RunConfig(), {"sample.temperature": "0.7", "corpus.synthetic.branching": "5",
                                        "loop.init": "scratch"})
    assert from_dict(RunConfig, to_dict(cfg)) == cfg
    assert from_dict(RunConfig, json.loads(json.dumps(to_dict(cfg)))) == cfg
    # Missing keys take defaults; unknown keys are errors.
    assert from_dict(RunConfig, {}) == RunConfig()
    with pytest.raises(ValueError, match="bogus"):
        from_dict(RunConfig, {"bogus": 1})
    with pytest.raises(ValueError, match="nope"):
        from_dict(RunConfig, {"train": {"nope": 1}})


def test_help_lines_list_every_key_with_default_and_help():
    cfg = RunConfig()
    lines = help_lines(cfg)
    flat = flatten(cfg)
    assert len(lines) == len(flat)
    for line, (key, v) in zip(lines, flat.items()):
        shown = json.dumps(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
        assert line.strip().startswith(f"--{key}={shown}"), line
        assert line.strip()[len(f"--{key}={shown}"):].strip(), f"no help text for --{key}"
    # Every option carries help text (the conventions require it).
    by_key = {line.split("=")[0].strip(): line for line in lines}
    assert "temperature" in by_key["--sample.temperature"].lower()


def test_diff_lists_changed_and_missing_keys():
    a = flatten(RunConfig())
    b = flatten(apply_overrides(RunConfig(), {"train.lr": "0.5", "corpus.synthetic.seed": "2"}))
    assert diff(a, a) == []
    assert diff(a, b) == ["corpus.synthetic.seed", "train.lr"]
    c = dict(a)
    del c["seed"]
    c["extra"] = 1
    assert diff(a, c) == ["extra", "seed"]
    # A value of None is not the same as a missing key.
    assert diff({"k": None}, {}) == ["k"]
