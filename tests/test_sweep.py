"""Sweeps: grid expansion and naming, --dry-run, a 2 × 2 debug grid end to end, resume per point, a failing
point, summary values, figures, and (`-m slow`) the Ray backend on a local instance giving identical summaries.

Run: `make test` (or `.venv/bin/python -m pytest tests/test_sweep.py -q`).
"""
import csv
import json
import os
import shutil

import pytest

from training.cli import main
from training.sweep import load_grid

GRID = """preset: debug
overrides: {loop.generations: 2}
axes:
  sample.temperature: [0.6, 1.5]
  mix.fresh_fraction: [0.0, 0.5]
"""
VOLATILE = ("time/",)  # wall-clock columns differ between two identical runs


def grid_file(tmp_path, text=GRID, name="g.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def rows(sweep_dir):
    with open(os.path.join(sweep_dir, "summary.csv")) as f:
        return {r["name"]: r for r in csv.DictReader(f)}


def stable(r):
    return {k: v for k, v in r.items() if not k.startswith(VOLATILE)}


def test_grid_expansion_and_names(tmp_path):
    g = load_grid(grid_file(tmp_path, GRID + "  seed: [1, 2]\n"))
    names = [p.name for p in g.points]
    assert len(names) == 8 and names[0] == "T=0.6,lambda=0,seed=1" and names[-1] == "T=1.5,lambda=0.5,seed=2"
    assert "--sample.temperature=0.6" in g.points[0].args and "--loop.generations=2" in g.points[0].args


@pytest.mark.parametrize("text,needle", [
    ("preset: debug\naxes: {sample.temprature: [1]}\n", "unknown option --sample.temprature"),
    ("preset: debug\naxes: {sample.temperature: [-1]}\n", "sample.temperature"),
    ("preset: debug\naxes: {}\n", "axes"),
    ("preset: nope\naxes: {seed: [1]}\n", "unknown preset"),
    ("preset: debug\naxes: [oops\n", "not valid YAML"),
])
def test_bad_grid_exit_2(tmp_path, capsys, text, needle):
    out = tmp_path / "out"
    assert main(["sweep", grid_file(tmp_path, text), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1 and not out.exists()


def test_dry_run_lists_points(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sweep", grid_file(tmp_path), "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and lines[0].startswith("T=0.6,lambda=0\t") and not out.exists()


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    out = tmp / "out"
    assert main(["sweep", grid_file(tmp), "--out", str(out), "--workers", "2"]) == 0
    return tmp, out


def test_sweep_runs_every_point_and_summarises(swept):
    _, out = swept
    table = rows(out)
    assert len(table) == 4 and all(r["status"] == "done" for r in table.values())
    for name, r in table.items():
        with open(out / name / "metrics.jsonl") as f:
            last = json.loads(f.readlines()[-1])
        assert float(r["val/entropy"]) == pytest.approx(last["val/entropy"], rel=1e-9)
        assert float(r["samples/distinct_2"]) == pytest.approx(last["samples/distinct_2"], rel=1e-9)
        assert r["verdict"] == json.load(open(out / name / "summary.json"))["verdict"]["verdict"]
    assert "mean ± 95% interval" in (out / "summary.md").read_text()
    for stem in ("measures", "phase"):
        png, pdf = (out / f"{stem}.png").read_bytes(), (out / f"{stem}.pdf").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000 and pdf[:5] == b"%PDF-"


def test_hparams_logged(swept):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, out = swept
    acc = EventAccumulator(str(out / "T=0.6,lambda=0"))
    acc.Reload()
    # each point is a session; the sweep's one experiment (every point's values) lives in its _sweep run
    assert "_hparams_/session_start_info" in acc.summary_metadata and "_hparams_/experiment" not in acc.summary_metadata
    acc = EventAccumulator(str(out / "_sweep"))
    acc.Reload()
    assert "_hparams_/experiment" in acc.summary_metadata


def test_rerun_skips_and_a_deleted_point_alone_reruns(swept, tmp_path, capsys):
    tmp, out = swept
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    grid = grid_file(tmp)
    capsys.readouterr()
    # Same --workers as the first run: the same torch thread count, so the redone point is bitwise identical.
    assert main(["sweep", grid, "--out", str(copy), "--workers", "2"]) == 0
    assert "4 finished, 0 to run" in capsys.readouterr().err
    os.remove(copy / "T=1.5,lambda=0.5" / "gen_001" / "DONE")
    kept = os.path.getmtime(copy / "T=0.6,lambda=0" / "metrics.jsonl")
    assert main(["sweep", grid, "--out", str(copy), "--workers", "2"]) == 0
    err = capsys.readouterr().err
    assert "3 finished, 1 to run" in err and "ok     T=1.5,lambda=0.5" in err
    assert os.path.getmtime(copy / "T=0.6,lambda=0" / "metrics.jsonl") == kept
    assert {k: stable(v) for k, v in rows(copy).items()} == {k: stable(v) for k, v in rows(out).items()}


def test_failing_point_is_recorded_and_others_finish_and_draw_the_workflow_figure(tmp_path):
    # One sweep for both (each sweep costs a process per point and a report): a workflow axis whose points run, and
    # a corpus axis whose missing file fails two of them at once.
    text = ("preset: debug\noverrides: {loop.generations: 2}\naxes:\n  corpus.path: ['', missing.txt]\n"
            "  mix.workflow: [replace, accumulate]\n")
    out = tmp_path / "out"
    assert main(["sweep", grid_file(tmp_path, text), "--out", str(out), "--workers", "2"]) == 2  # = failed points
    table = rows(out)
    for wf in ("replace", "accumulate"):
        bad, good = table[f"path=missing.txt,workflow={wf}"], table[f"path=,workflow={wf}"]
        assert bad["status"] == "failed" and "does not exist" in bad["error"] and good["status"] == "done"
    png = (out / "workflows.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (out / "workflows.pdf").read_bytes()[:5] == b"%PDF-"
    assert not (out / "phase.png").exists()


@pytest.mark.slow  # ~18 s: starts a local Ray instance (an optional backend)
def test_ray_backend_gives_identical_summaries(swept, tmp_path):
    pytest.importorskip("ray")
    tmp, out = swept
    ray_out = tmp_path / "ray"
    assert main(["sweep", grid_file(tmp), "--out", str(ray_out), "--backend", "ray", "--workers", "2"]) == 0
    assert {k: stable(v) for k, v in rows(ray_out).items()} == {k: stable(v) for k, v in rows(out).items()}


def test_change_tolerates_missing_values():
    from training.report import change

    assert change([{"v": 1.0}, {"v": 3.5}], "v") == 2.5
    assert change([{"v": 1.0}, {"v": None}], "v") is None and change([{}, {"v": 1.0}], "v") is None
