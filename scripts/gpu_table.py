"""The table of scripts/gpu_check.sh: read what its three steps wrote into DIR and print one Markdown table
(missing parts shown as n/a).

    python scripts/gpu_table.py DIR      (DIR: gpu.txt, steps.txt, bench.json, shakespeare/metrics.jsonl)
"""
import json
import os
import sys

d = sys.argv[1]
for name in ("gpu.txt", "steps.txt"):
    if os.path.exists(os.path.join(d, name)):
        print(open(os.path.join(d, name)).read().strip())
print()
print("| what | ours | HF | ours / HF | peak MiB (ours) |\n|---|---:|---:|---:|---:|")
bench = json.load(open(os.path.join(d, "bench.json"))) if os.path.exists(os.path.join(d, "bench.json")) else None
if bench:
    def default_row(s):  # ours with its defaults (no top-k/top-p, the default cache dtype), and every HF row
        plain = (s.get("top_k", 0), s.get("top_p", 1.0)) == (0, 1.0)
        return s["impl"] == "hf" or (s["impl"] == "ours" and plain and s.get("kv_request", "auto") == "auto")

    rows = {(s["impl"], s["batch"]): s for s in bench["sample"] if default_row(s)}
    for b in sorted({b for (_, b) in rows if b >= 64}):
        o, h = rows.get(("ours", b)), rows.get(("hf", b))
        if o and h:
            print(f"| sampling tokens/s, batch {b} | {o['tokens_per_s']:,.0f} | {h['tokens_per_s']:,.0f} | "
                  f"{o['tokens_per_s'] / h['tokens_per_s']:.2f} | {(o['peak_mem_bytes'] or 0) / 2**20:,.0f} |")
    tr = {t["impl"]: t for t in bench["train"]}
    if "ours" in tr and "hf" in tr:
        o, h = tr["ours"], tr["hf"]
        mfu = lambda t: "n/a" if t.get("mfu") is None else f"{100 * t['mfu']:.1f}%"  # noqa: E731
        print(f"| training tokens/s ({o['dtype']}, compiled {o['compile']}) | {o['tokens_per_s']:,.0f} | "
              f"{h['tokens_per_s']:,.0f} | {o['tokens_per_s'] / h['tokens_per_s']:.2f} | "
              f"{(o['peak_mem_bytes'] or 0) / 2**20:,.0f} |")
        print(f"| training MFU | {mfu(o)} | {mfu(h)} | | |")
else:
    print("| bench | n/a | n/a | | |")
m = os.path.join(d, "shakespeare", "metrics.jsonl")
recs = [json.loads(line) for line in open(m)] if os.path.exists(m) else []
print("\n| shakespeare generation | data s | train s | eval s | sample s | measure s | val/bpc | val/entropy bits |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in recs:
    t = [r.get(f"time/{k}_s") or 0.0 for k in ("data", "train", "eval", "sample", "measure")]
    print(f"| {r['generation']} | " + " | ".join(f"{x:.1f}" for x in t) +
          f" | {r.get('val/bpc') or float('nan'):.3f} | {r.get('val/entropy') or float('nan'):.3f} |")
if not recs:
    print("| (no generation finished) | | | | | | | |")
