"""The command line: every bad input gives one line, exit status 2 and no files; --help lists every option.

Run: `make test` (or `.venv/bin/python -m pytest tests/test_cli.py -q`).
"""
import os
import subprocess
import sys

import pytest

from training.cli import main
from training.config import flatten
from training.presets import debug

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = ["--preset", "debug", "--loop.progress=false", "--loop.generations=1"]


def run_cli(args, capsys):
    code = main(["run", *args])
    return code, capsys.readouterr().err


def corpus_file(tmp_path, data: bytes, name="c.txt"):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


BAD = {
    "negative temperature": (["--sample.temperature=-1"], "sample.temperature"),
    "lambda above 1": (["--mix.fresh_fraction=1.5"], "mix.fresh_fraction"),
    "lambda below 0": (["--mix.fresh_fraction", "-0.1"], "mix.fresh_fraction"),
    "zero generations": (["--loop.generations=0"], "loop.generations"),
    "unknown option": (["--sample.temprature=1"], "unknown option --sample.temprature"),
    "not a number": (["--sample.temperature=hot"], "sample.temperature"),
    "unknown preset": (["--preset", "nope"], "unknown preset"),
    "missing corpus": (["--corpus.path=/nonexistent/x.txt"], "does not exist"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_one_line_exit_2_nothing_written(name, tmp_path, capsys):
    args, needle = BAD[name]
    out = tmp_path / "run"
    code, err = run_cli([*FAST, "--out", str(out), *args], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("closedloop: error:") and needle in lines[0], err
    assert "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("content,needle", [
    (b"", "empty"),
    (b"   \n\n  \n", "empty"),
    (b"\xff\xfe bad bytes\n\nmore text here\n", "not valid UTF-8"),
    (b"\x00\x01\x02binary", "binary"),
    (b"short one.\n\nshort two.\n\nthree.\n", "fewer than one window"),
])
def test_bad_corpus(content, needle, tmp_path, capsys):
    out = tmp_path / "run"
    code, err = run_cli([*FAST, "--out", str(out), f"--corpus.path={corpus_file(tmp_path, content)}"], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_non_utf8_accepted_with_replace(tmp_path, capsys):
    text = b"\xff" + b"the quick brown fox jumps over the lazy dog. " * 60 + b"\n\n"
    path = corpus_file(tmp_path, text * 12)
    code, err = run_cli([*FAST, "--out", str(tmp_path / "r"), f"--corpus.path={path}", "--corpus.encoding_errors=replace",
                         "--mix.tokens_per_generation=3000", "--mix.real_data=fixed"], capsys)
    assert code == 0, err


def test_bad_input_never_touches_an_existing_run(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert run_cli([*FAST, "--out", out], capsys)[0] == 0
    before = {f: os.path.getmtime(os.path.join(out, f)) for f in os.listdir(out)}
    code, err = run_cli([*FAST, "--out", out, "--sample.temperature=0.5"], capsys)  # another config
    assert code == 2 and "sample.temperature" in err
    code, _ = run_cli([*FAST, "--out", out, "--overwrite", "--mix.fresh_fraction=2"], capsys)
    assert code == 2
    assert {f: os.path.getmtime(os.path.join(out, f)) for f in os.listdir(out)} == before
    code, err = run_cli([*FAST, "--out", out, "--overwrite", "--sample.temperature=0.5"], capsys)
    assert code == 0


def test_help_lists_every_option_with_default(capsys):
    assert main(["run", "--preset", "debug", "--help"]) == 0
    text = capsys.readouterr().out
    for key, value in flatten(debug()).items():
        assert f"--{key}=" in text, key
    assert "--sample.temperature=1.0" in text


def test_module_entry_point():
    env = {**os.environ, "PYTHONPATH": ROOT}
    p = subprocess.run([sys.executable, "-m", "training", "run", "--loop.generations=0"], cwd=ROOT,
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and p.stderr.strip() == "closedloop: error: loop.generations must be >= 1, got 0"


def test_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "f"
    f.write_text("keep me")
    code, err = run_cli([*FAST, "--out", str(f)], capsys)
    assert code == 2 and "is a file" in err and f.read_text() == "keep me"


def test_diverged_training_is_one_line(tmp_path, capsys):
    code, err = run_cli([*FAST, "--out", str(tmp_path / "r"), "--train.lr=1e6"], capsys)
    assert code == 2 and "diverged at generation 0" in err and "Traceback" not in err
    assert not (tmp_path / "r" / "gen_000" / "DONE").exists()


def test_same_command_and_seed_give_byte_identical_metrics(tmp_path, capsys):
    """Two runs of `closedloop run --preset debug --loop.generations=3` (one after the other in one process, so
    no global state may leak from the first into the second): metrics.jsonl equal byte for byte once the
    wall-clock figures (time/*) are taken out of each record."""
    import json

    lines = []
    for name in ("a", "b"):
        out = str(tmp_path / name)
        assert main(["run", "--preset", "debug", "--loop.generations=3", "--loop.progress=false", "--out", out]) == 0
        with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
            recs = [json.loads(line) for line in f]
        lines.append("".join(json.dumps({k: v for k, v in r.items() if not k.startswith("time/")}) + "\n"
                             for r in recs).encode())
    capsys.readouterr()
    assert len(lines[0].splitlines()) == 3 and lines[0] == lines[1]
