"""TensorBoard layout, read back from the event files (no browser): every scalar described with its unit, sample
documents fenced one block per document (rendered by TensorBoard's own Markdown), the training marker, a single
run's HParams entry, a sweep's HParams sessions grouped over seeds with discrete domains, the `_sweep` run, and
the printed link. The real-browser check is tests/test_tensorboard_browser.py (`pytest -m slow -k tensorboard`).

Run: `.venv/bin/python -m pytest tests/test_board.py -q`.
"""
import json
import math
import os
import re
import urllib.parse

import pytest

from training import board
from training.cli import main
from training.measures.registry import MEASURES

WIKITEXT = (" = Valkyria Chronicles III = \n\n Senjō no Valkyria 3 : Unrecorded Chronicles is a tactical role @-@ "
            "playing video game developed by Sega and Media.Vision for the PlayStation Portable . " * 2
            + "\n\n = = Gameplay = = \n\n```python\nprint('a fence inside the text')\n```\n\n ```` four too")


def accumulator(path):
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea

    acc = pea.EventAccumulator(str(path), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def scalars(acc, tag):
    """[(step, value)] of a scalar tag (this accumulator keeps every summary as a tensor)."""
    from tensorboard.util import tensor_util

    return [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]


def texts(acc, tag):
    return [e.tensor_proto.string_val[0].decode() for e in acc.Tensors(tag)]


def rendered(markdown):
    from tensorboard import plugin_util

    return plugin_util.markdown_to_safe_html(markdown)


def hparams_data(acc):
    from tensorboard.plugins.hparams import metadata

    md = acc.summary_metadata
    start = (metadata.parse_session_start_info_plugin_data(md[metadata.SESSION_START_INFO_TAG].plugin_data.content)
             if metadata.SESSION_START_INFO_TAG in md else None)
    exp = (metadata.parse_experiment_plugin_data(md[metadata.EXPERIMENT_TAG].plugin_data.content)
           if metadata.EXPERIMENT_TAG in md else None)
    return start, exp


def test_a_document_with_line_breaks_and_fences_is_one_block(tmp_path):
    from training.records import RunLogger

    docs = [WIKITEXT, "short one", "x" * 900]
    log = RunLogger(str(tmp_path))
    log.samples("samples/text", "generation 0 · T = 1 · λ = 0 · workflow replace · seed 0", docs, 0)
    log.close()
    md = texts(accumulator(tmp_path), "samples/text/text_summary")[0]
    html = rendered(md)
    assert html.count("<pre>") == 3  # one block per document, whatever it contains
    assert "print(&#x27;a fence inside the text&#x27;)" in html or "print('a fence inside the text')" in html
    assert "<h1>" not in html and "Gameplay" in html  # the document's own Markdown stays inside its block
    blocks = re.findall(r"<pre><code[^>]*>(.*?)</code></pre>", html, re.S)
    assert all(len(line) <= board.WRAP for b in blocks for line in b.replace("&amp;", "&").split("\n"))
    assert "(900 characters, first 500 shown)" in md and "x" * board.WRAP in blocks[2]


def test_fence_is_longer_than_any_backtick_run():
    assert board.fence("plain") == "```" and board.fence("a ``` b") == "````" and board.fence("`````") == "``````"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("board") / "debug-T1-lam0-replace-s0"
    assert main(["run", "--preset", "debug", "--out", str(d), "--loop.generations=2", "--loop.progress=false"]) == 0
    return d


def test_every_scalar_has_a_description_with_its_unit(run_dir):
    acc = accumulator(run_dir)
    scalars = [t for t, m in acc.summary_metadata.items() if m.plugin_data.plugin_name == "scalars"]
    assert len(scalars) > 40 and "train/loss" in scalars and "train/final_loss" in scalars
    for tag in scalars:
        desc = acc.summary_metadata[tag].summary_description
        assert f"({MEASURES[tag].unit})" in desc, (tag, desc)
        assert desc.endswith("x: global optimizer step" if MEASURES[tag].per_step else "x: generation"), tag


def test_layout_samples_text_marker_and_non_scalars(run_dir):
    acc = accumulator(run_dir)
    plugins = {t: m.plugin_data.plugin_name for t, m in acc.summary_metadata.items()}
    # non-scalar data have their own groups, out of samples/ (which holds scalars and the sample text only)
    assert plugins["views/zipf"] == "images" and plugins["views/ref_bpc_per_doc"] == "histograms"
    assert {p for t, p in plugins.items() if t.startswith("samples/")} == {"scalars", "text"}
    # views/ sorts after every scalar group: TensorBoard shows the per-generation curves first
    assert all(t.split("/")[0] < "views" for t, p in plugins.items() if p == "scalars")
    recs = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    for g, md in enumerate(texts(acc, "samples/text/text_summary")):
        assert md.startswith(f"**generation {g} · T = 1 · λ = 0 · workflow replace · seed 0**")
        assert rendered(md).count("<pre>") == 3
    # per-generation training scalars at step = generation; the marker staircase at the optimizer step
    assert scalars(acc, "train/global_step") == [
        (r["generation"], r["train/global_step"]) for r in recs]
    marks = scalars(acc, "train/generation")
    assert marks == [(1, 0), (recs[0]["train/global_step"], 0), (recs[0]["train/global_step"] + 1, 1),
                     (recs[1]["train/global_step"], 1)]


def test_a_single_run_has_its_hparams_entry(run_dir):
    acc = accumulator(run_dir)
    start, exp = hparams_data(acc)
    hp = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    assert hp["sample.temperature"] == 1.0 and hp["mix.fresh_fraction"] == 0.0 and hp["mix.workflow"] == "replace"
    assert "seed" not in hp and start.group_name.startswith("T=1,λ=0,workflow=replace,init=warm")
    infos = {h.name: h for h in exp.hparam_infos}
    assert infos["sample.temperature"].display_name == "T" and list(infos["mix.fresh_fraction"].domain_discrete)
    # T and λ come first among the columns TensorBoard shows (it orders by `differs`, then by name)
    first = {h.name for h in exp.hparam_infos if h.differs}
    assert first == {"sample.temperature", "mix.fresh_fraction", "mix.workflow"}
    metrics = {m.name.tag: m.display_name for m in exp.metric_infos}
    assert metrics[board.DELTA] == "Δ val/entropy (bits)" and metrics[board.VERDICT] == "verdict (code)"
    assert metrics["val/bpc"] == "val/bpc (bits/char)" and list(metrics)[:2] == [board.DELTA, board.VERDICT]
    recs = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
    (step, delta), = scalars(acc, board.DELTA)
    assert step == 1 and delta == pytest.approx(recs[1]["val/entropy"] - recs[0]["val/entropy"], abs=1e-6)
    assert math.isnan(scalars(acc, board.VERDICT)[0][1])  # 2 generations: undetermined
    assert len([f for f in os.listdir(run_dir) if f.endswith(board.HPARAMS_SUFFIX)]) == 1


def test_verdict_codes():
    assert [board.verdict_code(v) for v in ("collapse", "drift", "stable", "heat death")] == [-2, -1, 0, 2]
    assert math.isnan(board.verdict_code("undetermined")) and math.isnan(board.verdict_code(None))


def test_the_link_filters_main_measures_and_groups_colours_by_lambda():
    cmd, link = board.tensorboard_hint("runs/debug", run_filter="debug-T1-lam0.5-replace-s0")
    assert cmd == "tensorboard --logdir runs/debug"
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(link.split()[-1]).query))
    assert q["smoothing"] == "0"
    tags = re.compile(q["tagFilter"])
    assert all(tags.search(t) for t in ("val/entropy", "samples/distinct_2", "sweep/phase"))
    assert not tags.search("samples/distinct_1") and not tags.search("val/entropy_x")
    group = re.compile(q["runColorGroup"].removeprefix("regex:"))
    assert group.search("T=0.6,lambda=0.5,seed=1").group(1) == "0.5"
    assert group.search("debug-T1-lam0.5-replace-s0").group(1) == "0.5"
    assert re.search(q["runFilter"], "debug-T1-lam0.5-replace-s0")


GRID = "preset: debug\naxes:\n  sample.temperature: [0.6, 1.5]\n  mix.fresh_fraction: [0.0]\n  seed: [0, 1]\n"


@pytest.fixture
def fake_sweep(tmp_path):
    """A finished 2 settings × 2 seeds sweep folder written by hand (configs, records, verdicts): the report's
    TensorBoard output without training anything."""
    from training import presets
    from training.config import apply_overrides, to_dict
    from training.sweep import load_grid

    (tmp_path / "sweep.yaml").write_text(GRID)
    grid = load_grid(str(tmp_path / "sweep.yaml"))
    verdicts = ["collapse", "collapse", "heat death", "stable"]
    for i, p in enumerate(grid.points):
        d = tmp_path / p.name
        d.mkdir()
        cfg = apply_overrides(presets.debug(), {k: str(v) for k, v in p.values.items()})
        (d / "config.json").write_text(json.dumps(to_dict(cfg)))
        recs = [{"generation": g, "val/entropy": 2.0 + g * (i - 1.5), "val/bpc": 2.5, "samples/distinct_2": 0.5}
                for g in range(3)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        (d / "summary.json").write_text(json.dumps({"generations": 3, "verdict": {"verdict": verdicts[i]}}))
    return tmp_path


def test_sweep_hparams_group_seeds_with_discrete_domains(fake_sweep):
    from training.report import write_report

    write_report(str(fake_sweep))
    write_report(str(fake_sweep))  # again: still one session per point and one copy of the sweep run
    groups = {}
    for name in ("T=0.6,lambda=0,seed=0", "T=0.6,lambda=0,seed=1", "T=1.5,lambda=0,seed=0", "T=1.5,lambda=0,seed=1"):
        assert len([f for f in os.listdir(fake_sweep / name) if f.endswith(board.HPARAMS_SUFFIX)]) == 1
        acc = accumulator(fake_sweep / name)
        start, exp = hparams_data(acc)
        assert exp is None and "seed" not in start.hparams  # the experiment lives in _sweep/
        groups.setdefault(start.group_name, []).append(scalars(acc, board.VERDICT)[0][1])
    assert groups == {"T=0.6,λ=0": [-2.0, -2.0], "T=1.5,λ=0": [2.0, 0.0]}
    sweep_run = fake_sweep / board.SWEEP_RUN
    assert len(os.listdir(sweep_run)) == 1
    acc = accumulator(sweep_run)
    start, exp = hparams_data(acc)
    assert start is None  # the sweep run is no session: it holds the experiment, figures and summary
    domains = {h.name: [v.number_value for v in h.domain_discrete.values] for h in exp.hparam_infos}
    assert domains == {"sample.temperature": [0.6, 1.5], "mix.fresh_fraction": [0.0]}
    assert [m.name.tag for m in exp.metric_infos] == [board.DELTA, board.VERDICT, "val/entropy", "val/bpc",
                                                      "samples/distinct_2"]
    plugins = {t: m.plugin_data.plugin_name for t, m in acc.summary_metadata.items()}
    assert plugins["sweep/measures"] == plugins["sweep/phase"] == "images"
    assert [e.step for e in acc.Tensors("sweep/phase")] == [0]
    summary = texts(acc, "sweep/summary/text_summary")
    assert len(summary) == 1 and summary[0] == (fake_sweep / "summary.md").read_text()
    assert "<table>" in rendered(summary[0])
