"""Corpora read through Hugging Face `datasets`: local table files and hub datasets, one document per row.

- `table_source(cfg)`: a local .jsonl/.json/.csv/.parquet file (`corpus.path`), text in `corpus.text_column`.
- `hub_source(cfg, split)`: a hub dataset `corpus.hf` with `corpus.hf_config` and `corpus.split` (or `split`: the
  held-out `corpus.val_split`), downloaded once into
  `<corpus.cache_dir>/hf`. With no network the hub is not retried: a quick connection probe fails, the offline
  mode of `datasets` is switched on (a dataset already in the cache still loads), and anything else fails at once
  with one line naming the id and saying how to pass a local file instead.
Rows are read from the memory-mapped Arrow table in batches, so a large dataset is never held as Python strings.
`datasets` is imported inside these functions (an optional dependency: `pip install -e '.[hf]'`).
Called by data/corpus.py; tested in tests/test_sources.py.
"""
from __future__ import annotations

import os
import socket
from typing import Iterator
from urllib.parse import urlparse

_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connection to the hub endpoint (no retries): False at once without a network."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
        return True
    except OSError:
        return False


def set_offline() -> None:
    """Switch huggingface_hub, datasets and transformers to their offline mode (cache only, no retries)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    import sys

    # Modules imported before read these flags at import time: set them too.
    for mod, attr in (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("datasets.config", "HF_HUB_OFFLINE"),
                      ("datasets.config", "HF_DATASETS_OFFLINE")):
        if mod in sys.modules:
            setattr(sys.modules[mod], attr, True)


def _datasets():
    try:
        import datasets
    except ImportError:
        raise ValueError("reading table files and hub datasets needs the `datasets` package: "
                         "pip install -e '.[hf]'") from None
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _row_batches(ds, column: str, size: int = 4096):
    """A function giving batches of one column's rows as stripped strings ('' for missing values)."""
    def batches() -> Iterator[list[str]]:
        for b in ds.select_columns([column]).iter(batch_size=size):
            yield [("" if v is None else str(v)).replace("\r\n", "\n").strip() for v in b[column]]
    return batches


def _check_column(ds, column: str, where: str) -> None:
    if column not in ds.column_names:
        raise ValueError(f"{where} has no column {column!r} (it has: {', '.join(ds.column_names)}); "
                         "pass --corpus.text_column=NAME")


def table_source(cfg):
    from data.corpus import file_hash

    path = cfg.path
    if not os.path.exists(path):
        raise FileNotFoundError(f"corpus.path {path!r} does not exist")
    if os.path.isdir(path):
        raise ValueError(f"corpus.path {path!r} is a folder; a table corpus is one .jsonl/.json/.csv/.parquet file")
    ext = os.path.splitext(path)[1].lower()
    if ext not in _BUILDERS:
        raise ValueError(f"corpus.path {path!r}: a table file must end in .jsonl, .json, .csv or .parquet")
    where = f"corpus.path {path!r}"
    if cfg.split != "train":
        raise ValueError(f"corpus.split={cfg.split!r} does not exist in {where}: a table file has only 'train'")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{where} holds no text (empty)")
    datasets = _datasets()
    try:
        ds = datasets.load_dataset(_BUILDERS[ext], data_files=os.path.abspath(path), split="train",
                                   cache_dir=os.path.join(cfg.resolved_cache_dir, "hf"))
    except Exception as e:  # datasets wraps parse errors in its own types: report one line
        raise ValueError(f"{where} could not be read as {ext[1:]}: {_first_line(e)}") from None
    _check_column(ds, cfg.text_column, where)
    content = f"table:{file_hash([path], os.path.dirname(path) or '.')}:{cfg.text_column}"
    name = os.path.splitext(os.path.basename(path))[0]
    return name, content, _row_batches(ds, cfg.text_column), len(ds), where


def hub_source(cfg, split: str | None = None):
    """The hub dataset's split `split` (default corpus.split) as a source."""
    split = split or cfg.split
    online = hub_reachable()
    if not online:
        set_offline()
    datasets = _datasets()
    where = f"corpus.hf={cfg.hf!r}" + (f" (config {cfg.hf_config!r})" if cfg.hf_config else "")
    try:
        dd = datasets.load_dataset(cfg.hf, cfg.hf_config or None, cache_dir=os.path.join(cfg.resolved_cache_dir, "hf"))
    except Exception as e:
        if not online or isinstance(e, (ConnectionError, TimeoutError, OSError)):
            raise ValueError(
                f"cannot load {where}: the Hugging Face hub is not reachable and it is not in the cache "
                f"({_first_line(e)}); download it where there is a network, or pass a local file with "
                "--corpus.path=FILE (.txt, .jsonl, .json, .csv or .parquet)") from None
        raise ValueError(f"cannot load {where}: {_first_line(e)}") from None
    if split not in dd:
        option = "corpus.split" if split == cfg.split else "corpus.val_split"
        raise ValueError(f"{option}={split!r} does not exist in {where}; it has: {', '.join(dd)}")
    ds = dd[split]
    _check_column(ds, cfg.text_column, where)
    content = f"hf:{cfg.hf}:{cfg.hf_config}:{split}:{cfg.text_column}:{ds._fingerprint}"
    name = cfg.hf.rstrip("/").split("/")[-1]
    return name, content, _row_batches(ds, cfg.text_column), len(ds), where
