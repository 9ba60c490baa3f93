"""Pinned trajectory: the per-generation metrics of a seeded 4-generation debug run, kept in tests/assets and
compared with a tolerance (torchtitan keeps its loss curves this way), so that a change to the dynamics is caught
and made on purpose.

Run: `python -m pytest tests/test_trajectory.py` (~5 s on one thread). After an intended change to what a run
computes, regenerate the asset and commit it with the change that explains it:
`python tests/test_trajectory.py --write`.

The tolerance: on one machine a run reproduces bit for bit; across CPU families torch's vectorised kernels (AVX2
against AVX-512, torch.backends.cpu.get_cpu_capability()) and MKL sum floats in other orders. Measured on one
machine with ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 (what a CPU without
AVX-512 runs) against its AVX-512 default: the same sampled ids in every generation and every measure within 5e-8
relative. That needs fp32 off oneDNN (training/trainer.py `cpu_onednn`, set by every run and by conftest):
with oneDNN's GELU, generation 2 sampled other tokens and samples/self_bleu4 moved by 1.05e-4, and this test failed
on AVX2 kernels. RTOL = 1e-4 leaves room for summation order and catches a change of the dynamics.
"""
import json
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSET = os.path.join(ROOT, "tests", "assets", "debug_trajectory.json")
ARGS = {"loop.generations": "4", "loop.progress": "false", "seed": "0", "sample.temperature": "0.8",
        "mix.fresh_fraction": "0.25"}
RTOL, ATOL = 1e-4, 1e-6
VOLATILE = ("time/",)  # wall-clock figures: never reproducible


def trajectory(run_dir: str) -> list[dict]:
    """The reproducible part of each generation's record: every key but time/*."""
    from training import presets
    from training.config import apply_overrides
    from training.loop import run_loop
    from training.prepare import prepare
    from training.records import read_metrics

    cfg = apply_overrides(presets.debug(), ARGS)
    run_loop(prepare(cfg, run_dir), run_dir, argv=[])
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)}
            for r in read_metrics(os.path.join(run_dir, "metrics.jsonl"))]


def test_debug_run_follows_the_pinned_trajectory(tmp_path):
    with open(ASSET, encoding="utf-8") as f:
        pinned = json.load(f)["records"]
    got = trajectory(str(tmp_path / "run"))
    assert len(got) == len(pinned)
    for g, (want, have) in enumerate(zip(pinned, got)):
        assert set(have) == set(want), f"generation {g}: keys changed: {sorted(set(have) ^ set(want))}"
        for k, v in want.items():
            w = have[k]
            if isinstance(v, float) and isinstance(w, float):
                assert math.isclose(w, v, rel_tol=RTOL, abs_tol=ATOL), f"generation {g}: {k} {w!r} != pinned {v!r}"
            else:
                assert w == v, f"generation {g}: {k} {w!r} != pinned {v!r}"


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_trajectory.py --write   (regenerates tests/assets/debug_trajectory.json)")
    import tempfile

    import torch

    sys.path.insert(0, ROOT)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        records = trajectory(os.path.join(tmp, "run"))
    with open(ASSET, "w", encoding="utf-8") as f:
        json.dump({"preset": "debug", "overrides": ARGS, "records": records}, f, indent=1)
        f.write("\n")
    print(f"wrote {ASSET}: {len(records)} generations")
