"""Records of a run: TensorBoard events and metrics.jsonl behind one small interface.

TensorBoard scalar tags equal metrics.jsonl keys (names in ARCHITECTURE.md): `train/loss`, `train/lr` and the
marker `train/generation` at the global optimizer step, everything else at step = generation; each scalar's
first event carries its description and unit (training/board.py lays out TensorBoard). `RunLogger(None)` is the
no-op logger. On resume the writer purges events at or after the first redone training step, so an interrupted
generation leaves no duplicate curve. env.json holds one record per start of the run (`append_env`). Tested in tests/test_loop.py and tests/test_board.py.
"""
from __future__ import annotations

import json
import math
import os

from training import board
from training.rundir import jsonable, read_json, write_json, write_text


class RunLogger:
    def __init__(self, run_dir: str | None, purge_step: int | None = None):
        self.writer = None
        if run_dir is not None:
            from torch.utils.tensorboard import SummaryWriter  # lazy: tensorboard is heavy to import

            self.writer = SummaryWriter(log_dir=run_dir, purge_step=purge_step, flush_secs=10)
        self._described: set[str] = set()  # tags whose description this writer has written

    def scalars(self, step: int, values: dict) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                first = k not in self._described
                self.writer.file_writer.add_summary(board.scalar_summary(k, v, with_metadata=first), step)
                self._described.add(k)

    def text(self, tag: str, text: str, step: int) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text, step)

    def samples(self, tag: str, header: str, docs: list[str], step: int) -> None:
        """Sample documents as Markdown, one fenced code block per document under `header`."""
        self.text(tag, board.samples_markdown(header, docs), step)

    def histogram(self, tag: str, values, step: int) -> None:
        if self.writer is not None and len(values):
            self.writer.add_histogram(tag, values, step)

    def figure(self, tag: str, fig, step: int) -> None:
        """A matplotlib figure as an image (closed afterwards)."""
        if self.writer is not None:
            self.writer.add_figure(tag, fig, step, close=True)
        else:
            import matplotlib.pyplot as plt

            plt.close(fig)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def append_env(path: str, record: dict) -> None:
    """Add one start's record to env.json (a list, one record per start, oldest first), rewritten atomically; an
    env.json from before it was a list (one record) becomes the first item."""
    old = read_json(path) if os.path.exists(path) else []
    write_json(path, [*(old if isinstance(old, list) else [old]), record])


def write_metrics(path: str, records: list[dict]) -> None:
    """Rewrite metrics.jsonl atomically (one JSON object per finished generation)."""
    write_text(path, "".join(json.dumps(r, default=jsonable) + "\n" for r in records))
