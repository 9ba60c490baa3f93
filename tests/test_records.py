"""Records that pin what ran: resolved numerics in config.json (no `auto` left), a resume whose resolution differs
refused with one line naming the option (accepted when passed explicitly), env.json one record per start, and the
cores a process may use (pinning, container quota).

Run: `python -m pytest tests/test_records.py -q`
"""
import json
import os
import shutil

import pytest
import torch

from training import numerics, presets
from training.cli import main
from training.config import apply_overrides, flatten
from training.records import append_env

FAST = ["--preset", "debug", "--loop.progress=false", "--loop.generations=1", "--loop.first_steps=20",
        "--loop.bleu_docs=20"]


def test_resolve_leaves_no_auto():
    cfg = presets.debug()
    assert {k: v for k, v in flatten(cfg).items() if k in numerics.KEYS and v == "auto"}  # requested: auto
    cpu = numerics.resolve(cfg, torch.device("cpu"))
    assert cpu == {"train.device": "cpu", "train.dtype": "fp32", "train.compile": "false",
                   "sample.compile": "false", "sample.kv_dtype": "fp32"}
    cuda = numerics.resolve(cfg, torch.device("cuda", 0))
    assert cuda == {"train.device": "cuda", "train.dtype": "bf16", "train.compile": "true",
                    "sample.compile": "true", "sample.kv_dtype": "bf16"}
    explicit = apply_overrides(cfg, {"train.dtype": "bf16", "sample.kv_dtype": "fp16"})
    assert numerics.resolve(explicit, torch.device("cpu"))["sample.kv_dtype"] == "fp16"
    assert numerics.resolve(explicit, torch.device("cpu"))["train.dtype"] == "bf16"


def test_check_refuses_another_resolution_unless_explicit():
    old = numerics.resolve(presets.debug(), torch.device("cuda", 0))
    new = numerics.resolve(presets.debug(), torch.device("cpu"))
    with pytest.raises(ValueError, match=r"ran with train.device=cuda .* resolves train.device=auto to cpu; "
                                         r"pass --train.device=cpu"):
        numerics.check(old, new, flatten(presets.debug()), "runs/x")
    requested = flatten(apply_overrides(presets.debug(), {k: new[k] for k in numerics.KEYS}))
    numerics.check(old, new, requested, "runs/x")  # every option explicit: accepted
    numerics.check(None, new, flatten(presets.debug()), "runs/x")  # a record without `resolved`: nothing to compare


def test_append_env_keeps_one_record_per_start(tmp_path):
    path = str(tmp_path / "env.json")
    append_env(path, {"start": 1})
    append_env(path, {"start": 2})
    assert json.load(open(path)) == [{"start": 1}, {"start": 2}]
    (tmp_path / "old.json").write_text(json.dumps({"start": 0}))  # env.json before it was a list
    append_env(str(tmp_path / "old.json"), {"start": 1})
    assert json.load(open(tmp_path / "old.json")) == [{"start": 0}, {"start": 1}]


def test_run_records_resolution_and_refuses_another(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", *FAST, "--out", str(out)]) == 0
    cfg = json.load(open(out / "config.json"))
    assert cfg["train"]["device"] == "auto" and cfg["sample"]["kv_dtype"] == "auto"  # the request, kept
    assert "auto" not in cfg["resolved"].values() and cfg["resolved"]["train.device"] == "cpu"
    assert cfg["resolved"]["loop.budget"] == "steps"
    # The same run directory as if made on a CUDA machine: resuming here is refused, naming the option...
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    cfg["resolved"].update({"train.device": "cuda", "train.dtype": "bf16"})
    (moved / "config.json").write_text(json.dumps(cfg))
    capsys.readouterr()
    assert main(["run", *FAST, "--loop.generations=2", "--out", str(moved)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--train.device=cpu" in err[0] and "closedloop: error:" in err[0]
    assert not (moved / "gen_001").exists()
    # ...and accepted when the user passes the options explicitly; env.json then holds one record per start.
    assert main(["run", *FAST, "--loop.generations=2", "--out", str(moved), "--train.device=cpu",
                 "--train.dtype=fp32"]) == 0
    env = json.load(open(moved / "env.json"))
    assert [e["first_generation"] for e in env] == [0, 1]
    assert env[1]["resolved"]["train.device"] == "cpu"


def test_cpu_cores_honours_pinning_and_a_container_quota(tmp_path, monkeypatch):
    from training import environment

    pinned = len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    monkeypatch.setattr(environment, "CGROUP_CPU_MAX", str(quota))
    for text, cores in (("max 100000\n", pinned), ("150000 100000\n", min(pinned, 2)), ("50000 100000\n", 1)):
        quota.write_text(text)  # "150000 100000": 1.5 cores of time per period, so 2 threads can use it
        assert environment.cpu_cores() == cores, text
    quota.unlink()  # no cgroup v2 file: the pinned CPUs
    assert environment.cpu_cores() == pinned
