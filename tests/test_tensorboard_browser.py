"""The real-browser check: TensorBoard over a small sweep, looked at in headless Chromium.

A 2 settings × 2 seeds sweep (debug preset, 2 generations) is run; TensorBoard is started on 127.0.0.1 on a free
port and stopped by its own PID; its HTTP API must give 2 HParams rows (seeds grouped) with checkbox domains for T
and λ and the Δ val/entropy and verdict columns, and one <pre> block per sample document in the Text tab's
rendering; then Chromium screenshots Time Series, Text and HParams, and each must show a page (enough
non-background pixels, enough distinct colours), not a blank or an error.

Skipped when no Chromium is installed (Debian: `apt-get install chromium chromium-driver`).
Run: `.venv/bin/python -m pytest -m slow -k tensorboard` (about 90 s on 2 cores).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from training.cli import main

pytestmark = pytest.mark.slow
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
GRID = """preset: debug
overrides: {loop.generations: 2}
axes:
  sample.temperature: [0.6, 1.5]
  mix.fresh_fraction: [0.5]
  seed: [0, 1]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read().decode()


def screenshot(url: str, path: str) -> np.ndarray:
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={path}", "--window-size=1400,1000", "--virtual-time-budget=15000", url],
                   check=True, timeout=120, capture_output=True)
    import matplotlib.image

    return matplotlib.image.imread(path)[..., :3]


def not_blank(img: np.ndarray, what: str) -> None:
    """Below TensorBoard's orange bar, at least 5% of the pixels differ from the background (the most common
    colour) and at least 200 colours appear. Measured at 1400 × 1000: 7.5-9% and 780-1860 colours for these
    tabs over the sweep; 2.7-3.4% and 520-700 for TensorBoard over an empty folder; 0 for a blank page."""
    q = (img[70:] * 255).astype(np.uint8).reshape(-1, 3)
    colours, counts = np.unique(q, axis=0, return_counts=True)
    background = colours[counts.argmax()]
    ink = np.abs(q.astype(int) - background).sum(1) > 30
    assert ink.mean() > 0.05 and len(colours) > 200, f"{what}: {ink.mean():.3f} ink, {len(colours)} colours"


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (apt-get install chromium chromium-driver)")
def test_tensorboard_in_chromium(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(GRID)
    out = tmp_path / "sweep"
    assert main(["sweep", str(grid), "--out", str(out), "--workers", "2"]) == 0
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tb = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(out), "--host", "127.0.0.1",
                           "--port", str(port), "--reload_interval", "1"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while True:  # up, and every run loaded
            try:
                if len(json.loads(get(f"{base}/data/runs"))) == 5:
                    break
            except OSError:
                pass
            assert time.time() < deadline and tb.poll() is None, "TensorBoard did not come up with 5 runs"
            time.sleep(1)
        time.sleep(2)  # let the last event files finish loading
        exp = json.loads(get(f"{base}/data/plugin/hparams/experiment", {"experimentName": ""}))
        domains = {h["displayName"]: h.get("domainDiscrete") for h in exp["hparamInfos"]}
        assert domains == {"T": [0.6, 1.5], "λ": [0.5]}  # checkboxes, no seed
        metrics = [m["displayName"] for m in exp["metricInfos"]]
        assert metrics[:3] == ["Δ val/entropy (bits)", "verdict (code)", "val/entropy (bits)"]
        groups = json.loads(get(f"{base}/data/plugin/hparams/session_groups", {
            "experimentName": "", "startIndex": 0, "sliceSize": 100, "colParams": [],
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]}))
        assert groups["totalSize"] == 2 and all(len(g["sessions"]) == 2 for g in groups["sessionGroups"])
        text = json.loads(get(f"{base}/data/plugin/text/text?run=T%3D0.6%2Clambda%3D0.5%2Cseed%3D0"
                              "&tag=samples%2Ftext%2Ftext_summary"))
        assert len(text) == 2 and all(t["text"].count("<pre>") == 3 for t in text)
        for tab in ("timeseries", "text", "hparams"):
            img = screenshot(f"{base}/?forceSVG=true#{tab}", str(tmp_path / f"{tab}.png"))
            not_blank(img, tab)
    finally:
        tb.terminate()  # our own TensorBoard, by its PID
        try:
            tb.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(tb.pid, 9)
            tb.wait()
