#!/usr/bin/env python3
"""Draws the latency distributions of latency.py's JSON as an SVG: the
share of files whose copy was done within x milliseconds, per system
(nexusd, the inotifywait + cp floor, and any other system in the JSON).

Usage: chart.py LATENCY_JSON OUT_SVG
"""

import json
import math
import sys

W, H = 720, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 40, 60
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def main():
    data = json.load(open(sys.argv[1]))
    series = [(name, sorted(v["samples_ms"])) for name, v in data.items()
              if isinstance(v, dict) and v.get("samples_ms")]
    if not series:
        raise SystemExit("chart: no samples in the JSON")
    # x from 0 to the largest p99.5 of all series, so one outlier does not
    # flatten the picture; log-scaled.
    top = max(s[min(len(s) - 1, int(len(s) * 0.995))] for _, s in series)
    lo = max(0.05, min(s[0] for _, s in series) * 0.8)
    x_of = lambda ms: LEFT + (math.log10(max(ms, lo)) - math.log10(lo)) / (math.log10(top) - math.log10(lo)) * (W - LEFT - RIGHT)
    y_of = lambda share: TOP + (1 - share) * (H - TOP - BOTTOM)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{W / 2}" y="22" text-anchor="middle" font-size="14">File close → copy done: share of {len(series[0][1])} files within x ms</text>']
    # axes and grid
    for share in (0, 0.25, 0.5, 0.75, 0.9, 1.0):
        y = y_of(share)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{share:.0%}</text>')
    tick = 10 ** math.floor(math.log10(lo))
    while tick <= top * 1.001:
        for m in (1, 2, 5):
            v = tick * m
            if lo <= v <= top:
                x = x_of(v)
                out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{H - BOTTOM}" stroke="#eee"/>')
                out.append(f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{v:g}</text>')
        tick *= 10
    out.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 18}" text-anchor="middle">milliseconds (log scale)</text>')
    out.append(f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" stroke="#333"/>')
    out.append(f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}" stroke="#333"/>')
    for i, (name, samples) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        n = len(samples)
        points = " ".join(f"{x_of(min(v, top)):.1f},{y_of((k + 1) / n):.1f}" for k, v in enumerate(samples) if v <= top)
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
        p50 = samples[n // 2]
        label = {"nexusd": "nexusd (SQLite)", "nexusd-postgres": "nexusd (PostgreSQL)",
                 "floor": "inotifywait + cp (floor)", "watchexec": "watchexec, defaults",
                 "watchexec-debounce-1ms": "watchexec --debounce 1ms"}.get(name, name)
        out.append(f'<text x="{LEFT + 12}" y="{TOP + 18 + 16 * i}" fill="{colour}">{label}: p50 {p50:.2f} ms</text>')
    out.append("</svg>")
    with open(sys.argv[2], "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
