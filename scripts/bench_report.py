"""Summarises target/bench/results.csv (medians per bench and size) and draws the scaling plot."""
import csv
import statistics
import sys
from collections import defaultdict

src, summary, svg = sys.argv[1:4]
rows = list(csv.DictReader(open(src)))
groups = defaultdict(list)
for r in rows:
    groups[(r["bench"], int(r["rows"]))].append(r)

names = {
    "P1": "delete half of the table vs bulk DELETE",
    "P1a": "the same, append-only layout (due rows first in the heap)",
    "P2": "anonymise half vs bulk UPDATE",
    "P3": "drop 12 expired monthly partitions vs DETACH + DROP by hand",
    "P4": "objects: retentiond sweep vs s5cmd rm of the due keys",
    "P4-rclone": "objects: retentiond sweep vs rclone delete --min-age",
    "P5": "dry-run count vs SELECT count(*)",
}
# Targets from issue #6 (and the object-storage issue for P4): a time ratio, retentiond
# over baseline, except P3's, which is retentiond's own seconds.
targets = {"P1": ("ratio", 1.1), "P1a": ("ratio", 1.1), "P2": ("ratio", 1.5), "P3": ("seconds", 2.0),
           "P4": ("ratio", 1.0), "P4-rclone": ("ratio", 0.5), "P5": ("ratio", 1.1)}
lines = ["| bench | table rows / objects | records | baseline (median s) | retentiond (median s) | ratio (median) | target | met | retentiond records/s | peak RSS (MiB) | longest batch (ms) | reps |",
         "|---|---:|---:|---:|---:|---:|---:|:-:|---:|---:|---:|---:|"]
order = {b: i for i, b in enumerate(names)}
for (bench, n), rs in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1])):
    b = statistics.median(float(r["baseline_s"]) for r in rs)
    t = statistics.median(float(r["retentiond_s"]) for r in rs)
    ratio = statistics.median(float(r["ratio"]) for r in rs)
    recs = int(rs[0]["records"])
    rss = max(int(r["peak_rss_kib"]) for r in rs) / 1024
    longest = max(int(r["longest_batch_ms"]) for r in rs)
    kind, goal = targets.get(bench, ("ratio", float("inf")))
    value = t if kind == "seconds" else ratio
    target = f"<= {goal:g} s" if kind == "seconds" else f"<= {goal:g}x"
    met = "yes" if value <= goal else "no"
    lines.append(f"| {bench} ({names.get(bench, bench)}) | {n:,} | {recs:,} | {b:.3f} | {t:.3f} | {ratio:.2f}x | {target} | {met} | {recs / t:,.0f} | {rss:.1f} | {longest} | {len(rs)} |")
open(summary, "w").write("\n".join(lines) + "\n")

# Scaling plot: P1 seconds (median) against due rows, both series, log-log.
import math
pts = sorted((n, statistics.median(float(r["baseline_s"]) for r in rs), statistics.median(float(r["retentiond_s"]) for r in rs))
             for (bench, n), rs in groups.items() if bench == "P1")
if pts:
    W, H, L, B = 640, 400, 70, 50
    xs = [math.log10(p[0] / 2) for p in pts]
    ys = [math.log10(max(v, 1e-3)) for p in pts for v in p[1:]]
    x0, x1 = min(xs) - 0.2, max(xs) + 0.2
    y0, y1 = min(ys) - 0.3, max(ys) + 0.3
    X = lambda x: L + (x - x0) / (x1 - x0) * (W - L - 20)
    Y = lambda y: H - B - (y - y0) / (y1 - y0) * (H - B - 20)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<line x1="{L}" y1="{H-B}" x2="{W-20}" y2="{H-B}" stroke="#333"/><line x1="{L}" y1="20" x2="{L}" y2="{H-B}" stroke="#333"/>',
           f'<text x="{(W+L)/2}" y="{H-12}" text-anchor="middle">expired rows deleted (log)</text>',
           f'<text x="16" y="{(H-B)/2}" transform="rotate(-90 16 {(H-B)/2})" text-anchor="middle">seconds (log)</text>']
    for p, x in zip(pts, xs):
        out.append(f'<text x="{X(x):.0f}" y="{H-B+16}" text-anchor="middle">{p[0]//2:,}</text>')
    for k in range(math.floor(y0), math.ceil(y1) + 1):
        if y0 <= k <= y1:
            out.append(f'<text x="{L-6}" y="{Y(k)+4:.0f}" text-anchor="end">{10**k:g}</text><line x1="{L}" x2="{W-20}" y1="{Y(k):.0f}" y2="{Y(k):.0f}" stroke="#eee"/>')
    for idx, (label, color) in enumerate([("bulk DELETE", "#999"), ("retentiond", "#2f6fb0")]):
        path = " ".join(f"{X(x):.1f},{Y(math.log10(max(p[idx+1], 1e-3))):.1f}" for p, x in zip(pts, xs))
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for p, x in zip(pts, xs):
            out.append(f'<circle cx="{X(x):.1f}" cy="{Y(math.log10(max(p[idx+1], 1e-3))):.1f}" r="3" fill="{color}"/>')
        out.append(f'<rect x="{L+20}" y="{26+idx*18}" width="12" height="12" fill="{color}"/><text x="{L+38}" y="{36+idx*18}">{label}</text>')
    out.append("</svg>")
    open(svg, "w").write("\n".join(out))
