"""TensorBoard as the place where settings are compared: how a run and a sweep are laid out there.

RunLogger (training/records.py) writes a run's events through this module; training/report.py writes a sweep's.
- Every scalar carries a description with its unit and its x axis (summary metadata, from the measure registry).
  Per-run histograms and images go under `views/` (the loop names them), which sorts after every scalar group.
- Sample documents are Markdown with one fenced code block per document (the fence is longer than any run of
  backticks inside, so no document can close it), long lines wrapped, under a header naming generation, T, λ,
  workflow and seed.
- HParams: one session per run, in its own event file (`*.hparams`, replaced whenever it is rewritten). Its
  hparams are the run's settings without the seed and its group_name is the setting, so the seeds of a setting
  share one (averaged) row. Metrics: the main measures' last values, `final/delta_val_entropy` and
  `final/verdict_code`. A single run writes its own experiment (the HParams columns, discrete domains); a sweep
  writes one experiment for all its points into `<sweep>/_sweep/`, beside its figures and summary.md.
- `tensorboard_hint`: the `tensorboard --logdir` command and a link with smoothing 0, a tag filter on the main
  measures and run colours grouped by λ.

Tested in tests/test_board.py (event files read back); in a real browser by tests/test_tensorboard_browser.py
(`python -m pytest -m slow -k tensorboard`, needs Chromium).
"""
from __future__ import annotations

import glob
import math
import os
import re
import textwrap
import time
import urllib.parse

from training.measures.registry import MEASURES, describe, main_keys, register

DELTA, VERDICT = "final/delta_val_entropy", "final/verdict_code"
register(DELTA, "bits", "val/entropy at the last generation minus at generation 0 (the phase figure's colour)")
register(VERDICT, "code", "the verdict as a number: collapse −2, drift −1, stable 0, heat death 2, undetermined NaN; "
                          "a setting's row averages its seeds, so a value between codes means the seeds disagree")
register("train/generation", "generation", "the generation being trained: its steps mark where each generation "
                                           "starts on the optimizer-step axis", per_step=True)

TEXT_CHARS = 500  # characters of each sample document shown
WRAP = 100  # characters per line inside a code block (TensorBoard's text cards do not wrap <pre>)
HPARAMS_SUFFIX = ".hparams"  # the event file holding a run's HParams session
SWEEP_RUN = "_sweep"  # the sweep-level run inside a sweep folder: figures, summary, the HParams experiment
# The settings a single run reports as hparams: (config key, display name). The seed is never one: seeds of a
# setting are the repetitions its row averages.
RUN_HPARAMS = [("sample.temperature", "T"), ("mix.fresh_fraction", "λ"), ("mix.workflow", "workflow"),
               ("loop.init", "init"), ("mix.real_data", "real data"), ("loop.generations", "generations"),
               ("mix.tokens_per_generation", "tokens/gen"), ("train.steps", "steps/gen"),
               ("model.n_layer", "layers"), ("model.n_embd", "width"), ("tokenizer.kind", "tokenizer"),
               ("corpus", "corpus")]
DISPLAY = dict(RUN_HPARAMS)
AXES = ("sample.temperature", "mix.fresh_fraction")  # T and λ: the phase diagram's axes


def description(key: str) -> str:
    """The scalar's description: what it measures, its unit, and the x axis it is plotted against."""
    m = MEASURES.get(key)
    if m is None:
        return ""
    return describe(key) + (" · x: global optimizer step" if m.per_step else " · x: generation")


def scalar_summary(tag: str, value: float, with_metadata: bool = True):
    """A scalar summary proto; with its description (unit included) when with_metadata (the first write of a
    tag: TensorBoard keeps the metadata of a tag's first event)."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata

    v = Summary.Value(tag=tag, simple_value=float(value))
    if with_metadata:
        v.metadata.CopyFrom(SummaryMetadata(summary_description=description(tag),
                                            plugin_data=SummaryMetadata.PluginData(plugin_name="scalars")))
    return Summary(value=[v])


def fence(text: str) -> str:
    """A backtick fence longer than any backtick run in `text` (at least 3), so the text cannot close it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def wrap(text: str, width: int = WRAP) -> str:
    lines = []
    for line in text.split("\n"):
        lines += textwrap.wrap(line, width, break_long_words=True, break_on_hyphens=False,
                               replace_whitespace=False, drop_whitespace=False) or [""]
    return "\n".join(lines)


def run_header(values: dict, generation: int) -> str:
    """'generation 3 · T = 0.6 · λ = 0.5 · workflow replace · seed 1' from a flat config dict."""
    return (f"generation {generation} · T = {values['sample.temperature']:g} · λ = {values['mix.fresh_fraction']:g}"
            f" · workflow {values['mix.workflow']} · seed {values['seed']}")


def samples_markdown(header: str, docs: list[str]) -> str:
    """The header, then each document in its own fenced block (first TEXT_CHARS characters, lines wrapped)."""
    parts = [f"**{header}**"]
    for i, d in enumerate(docs, 1):
        shown = d[:TEXT_CHARS]
        cut = f", first {TEXT_CHARS} shown" if len(d) > TEXT_CHARS else ""
        body = wrap(shown)
        f = fence(body)
        parts.append(f"document {i} of {len(docs)} ({len(d)} characters{cut}):\n\n{f}text\n{body}\n{f}")
    return "\n\n".join(parts)


def verdict_code(name: str | None) -> float:
    """training/verdict.py's CODES (collapse −2, drift −1, stable 0, heat death 2), but NaN for undetermined (and
    no verdict): HParams averages a setting's seeds, and "no direction" must not average into one."""
    from training import verdict

    return math.nan if name in (None, "undetermined") else float(verdict.CODES[name])


def final_metrics(records: list[dict], verdict_name: str | None) -> dict:
    """The per-run HParams metrics that are not a measure's last value: Δ val/entropy and the verdict code."""
    first, last = records[0].get("val/entropy"), records[-1].get("val/entropy")
    delta = math.nan if first is None or last is None else last - first
    return {DELTA: delta, VERDICT: verdict_code(verdict_name)}


def _corpus(flat: dict) -> str:
    return flat.get("corpus.hf") or os.path.basename(flat.get("corpus.path") or "") or "synthetic"


def hparam_value(v):
    """A config value as an HParams value: numbers as float (one type per column), bool and str as they are."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v if isinstance(v, (bool, str)) \
        else str(v)


def run_hparams(flat: dict) -> dict:
    """The settings of a run (flat config dict, as config.json flattened) as HParams values, the seed left out."""
    return {key: hparam_value(_corpus(flat) if key == "corpus" else flat[key]) for key, _ in RUN_HPARAMS}


def setting_name(hparams: dict, keys=None) -> str:
    """The session group: one string per setting, shared by its seeds (the HParams table's "Trial ID"). From
    every hparam, or from `keys` only where the others are the same for every run compared (a sweep's axes)."""
    keys = list(hparams) if keys is None else keys
    return ",".join(f"{DISPLAY.get(k, k.split('.')[-1])}={_show(hparams[k])}" for k in keys)


def _show(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def experiment(domains: dict, display: dict, metric_tags: list[str], first=()):
    """The HParams experiment proto: one discrete-domain column per hparam (domains: name -> values seen), then
    the metrics, named with their unit. TensorBoard orders the columns by `differs`, then by name, and shows the
    first five: `differs` is set where the values differ and for the names in `first` (T and λ, which every
    comparison starts from, so a single run shows them too; a single run adds its workflow)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp

    exp = api_pb2.Experiment(time_created_secs=time.time())
    for name, values in domains.items():
        if not values:
            continue
        values = sorted(set(values), key=lambda v: (str(type(v)), v))
        if len({type(v) for v in values}) > 1:  # mixed types: compare as text
            values = sorted({str(v) for v in values})
        info = exp.hparam_infos.add(name=name, display_name=display.get(name, name),
                                    description=f"config option {name}" if name != "corpus" else "corpus source",
                                    differs=len(values) > 1 or name in first)
        hp.Discrete(values).update_hparam_info(info)
    exp.metric_infos.extend(hp.Metric(tag, display_name=_metric_name(tag), description=describe(tag)).as_proto()
                            for tag in metric_tags)
    data = plugin_data_pb2.HParamsPluginData(experiment=exp)
    return Summary(value=[Summary.Value(tag=metadata.EXPERIMENT_TAG, tensor=metadata.NULL_TENSOR,
                                        metadata=metadata.create_summary_metadata(data))])


def _metric_name(tag: str) -> str:
    unit = MEASURES[tag].unit if tag in MEASURES else ""
    name = {DELTA: "Δ val/entropy", VERDICT: "verdict"}.get(tag) or (tag if tag.startswith("val/") else
                                                                     tag.split("/")[-1])
    return f"{name} ({unit})" if unit else name


def metric_tags(present) -> list[str]:
    """The HParams metric columns among the tags a run has: Δ val/entropy and the verdict first (the HParams
    dashboard shows the first five metrics until more are ticked), then the main measures."""
    present = set(present)
    return [DELTA, VERDICT] + [k for k in main_keys() if k in present]


def write_hparams(run_dir: str, hparams: dict, group: str, finals: dict, step: int, experiment_pb=None) -> None:
    """Replace the run's HParams event file: the session (hparams, group, status), the final metrics at `step`
    and, for a single run, the experiment."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from tensorboard.plugins.hparams import summary_v2 as hp
    from torch.utils.tensorboard.writer import FileWriter

    for old in glob.glob(os.path.join(run_dir, f"events.out.tfevents.*{HPARAMS_SUFFIX}")):
        os.remove(old)  # rewritten whole: a re-run report or an extended run leaves one session, not two
    w = FileWriter(run_dir, filename_suffix=HPARAMS_SUFFIX)
    try:
        if experiment_pb is not None:
            w.add_summary(experiment_pb)
        w.add_summary(hp.hparams_pb(hparams, trial_id=group))
        for tag, value in finals.items():
            w.add_summary(scalar_summary(tag, value), step)
        # The session's end (status: finished), built as summary.session_end_pb would (that module needs TF).
        end = plugin_data_pb2.HParamsPluginData(session_end_info=plugin_data_pb2.SessionEndInfo(
            status=api_pb2.STATUS_SUCCESS, end_time_secs=time.time()))
        w.add_summary(Summary(value=[Summary.Value(tag=metadata.SESSION_END_INFO_TAG, tensor=metadata.NULL_TENSOR,
                                                   metadata=metadata.create_summary_metadata(end))]))
    finally:
        w.close()


def write_run_hparams(run_dir: str, flat: dict, records: list[dict], verdict_name: str | None) -> None:
    """A single run's HParams entry at its end: its settings, final metrics, and an experiment of its own."""
    if not records:
        return
    hparams = run_hparams(flat)
    exp = experiment({k: [v] for k, v in hparams.items()}, DISPLAY, metric_tags(records[-1]),
                     first=(*AXES, "mix.workflow"))
    write_hparams(run_dir, hparams, setting_name(hparams), final_metrics(records, verdict_name),
                  records[-1]["generation"], exp)


def _png_size(data: bytes) -> tuple[int, int]:
    """(height, width) from a PNG's IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")


def write_sweep_run(sweep_dir: str, images: dict, texts: dict, experiment_pb) -> str:
    """Rewrite `<sweep>/_sweep/`: PNG files as images (tag -> path), Markdown as text (tag -> string) and the
    sweep's HParams experiment, all at step 0. Old event files are removed first and the new one purges step 0
    in a TensorBoard already watching, so a report written again leaves one copy."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard import SummaryWriter

    run = os.path.join(sweep_dir, SWEEP_RUN)
    os.makedirs(run, exist_ok=True)
    for old in glob.glob(os.path.join(run, "events.out.tfevents.*")):
        os.remove(old)
    w = SummaryWriter(run, purge_step=0)
    try:
        w.file_writer.add_summary(experiment_pb)
        for tag, path in images.items():
            data = open(path, "rb").read()
            h, wd = _png_size(data)
            img = Summary.Image(height=h, width=wd, colorspace=4, encoded_image_string=data)
            w.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=img)]), 0)
        for tag, text in texts.items():
            w.add_text(tag, text, 0)
    finally:
        w.close()
    return run


def tensorboard_hint(logdir: str, run_filter: str | None = None, port: int = 6006) -> list[str]:
    """Two lines: the command, and a link opening Time Series with smoothing 0, the main measures (and the
    sweep's figures) and run colours grouped by the λ in run names (`lambda=0.5` in sweeps, `-lam0.5-` in
    single-run names)."""
    tags = "|".join(regex_escape(k) for k in main_keys())
    params = {"smoothing": "0", "tagFilter": f"^({tags})$|^sweep/",
              "runColorGroup": r"regex:(?:lambda=|-lam)([0-9.]+)"}
    if run_filter:
        params["runFilter"] = f"^{regex_escape(run_filter)}$"
    # Readable where it is safe: '+' and '\\' stay escaped ('+' would read as a space).
    query = urllib.parse.urlencode(params, safe="/:^$|()[],=?", quote_via=urllib.parse.quote)
    return [f"tensorboard --logdir {logdir}", f"  then open http://localhost:{port}/?{query}#timeseries"]


def regex_escape(text: str) -> str:
    """Escape for a JavaScript RegExp (TensorBoard's filters): only the metacharacters, unlike re.escape, whose
    escaped '-' a unicode-mode RegExp refuses."""
    return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", text)
