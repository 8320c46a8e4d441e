"""Print a Markdown table of every run record (metrics.json) under a folder."""

import json
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "outputs")
print("| run | data (source) | steps | epochs | test acc | first-128 acc | fit time (s) | status |")
print("|---|---|---|---|---|---|---|---|")
for path in sorted(root.rglob("metrics.json")):
    r = json.loads(path.read_text())
    m, h = r.get("metrics", {}), r.get("hparams", {})
    acc = m.get("test/acc")
    first = m.get("test/acc_first128")
    print(f"| {path.parent.name} | {h.get('data.dataset')} ({h.get('data.source_used')}) | {r.get('global_step')} "
          f"| {r.get('epochs')} | {acc if acc is None else f'{acc:.4f}'} | {'' if first is None else f'{first:.4f}'} "
          f"| {r.get('fit_time_s', 0):.0f} | {r['status']} |")
