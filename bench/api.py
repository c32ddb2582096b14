#!/usr/bin/env python3
"""The API: `nexusd apply -f` of 1,000 definitions over HTTP (the first,
creating them, then alternating changes of all of them), and the latency of
`GET /v1/workflows/NAME/runs?limit=100` (what `workflows history --limit
100` reads) with 100,000 runs recorded (SQLite). Prints JSON.

Usage: api.py NEXUSD_BIN WORK_DIR DEFS_DIR ROUNDS
"""

import http.client
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time

from common import wait_for


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


def main():
    binary, work, defs, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    history = int(sys.argv[5]) if len(sys.argv) > 5 else 100_000
    root = os.path.join(work, "api")
    shutil.rmtree(root, ignore_errors=True)
    data = os.path.join(root, "data")
    os.makedirs(data)
    subprocess.run([binary, "admin", "--data-dir", data, "create-user", "bench", "--role", "admin"],
                   check=True, capture_output=True)
    key = subprocess.run([binary, "admin", "--data-dir", data, "create-user-key", "bench"],
                         check=True, capture_output=True, text=True).stdout.strip()
    log = open(os.path.join(root, "agent.log"), "w")
    proc = subprocess.Popen([binary, "serve", "--data-dir", data, "--listen", "127.0.0.1:0"],
                            stdout=subprocess.DEVNULL, stderr=log)
    try:
        logpath = os.path.join(root, "agent.log")
        wait_for(lambda: " ready " in open(logpath).read(), "the agent")
        addr = re.search(r"http listening listen=(\S+)", open(logpath).read()).group(1)
        env = dict(os.environ, NEXUS_URL=f"http://{addr}", NEXUS_API_KEY=key)

        # Two variants of the same 1,000 definitions, applied in turn: every
        # apply after the first configures all of them.
        variant = os.path.join(root, "defs-b")
        shutil.copytree(defs, variant)
        for name in os.listdir(variant):
            p = os.path.join(variant, name)
            text = open(p).read().replace("generated workflow", "regenerated workflow")
            open(p, "w").write(text)
        times = []
        for i in range(rounds + 1):
            src = defs if i % 2 == 0 else variant
            t0 = time.perf_counter()
            out = subprocess.run([binary, "apply", "-f", src], env=env, capture_output=True, text=True)
            elapsed = time.perf_counter() - t0
            if out.returncode != 0:
                raise SystemExit(f"api bench: apply failed: {out.stderr}")
            lines = out.stdout.splitlines()
            want = "created" if i == 0 else "configured"
            if len(lines) != 1000 or not all(l.endswith(want) for l in lines):
                raise SystemExit(f"api bench: apply {i} did not {want} 1,000 workflows")
            times.append(elapsed)
        first, rest = times[0], times[1:]

        # `history` (100,000) finished runs of one workflow, written straight into the store.
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        db = os.path.join(data, ".nexus", "nexus.db")
        con = sqlite3.connect(db)
        now = int(time.time() * 1000)
        rows = []
        for i in range(history):
            t = now - (history - i) * 10
            rows.append((f"run_bench{i:08d}", "wf-1-1", f"evt_bench{i:08d}", "file.created",
                         f"/bench/1/1/f{i}.txt", "succeeded", 1, t, t, t + 3, 3))
        con.executemany(
            "INSERT INTO runs (id, workflow, event_id, event_type, path, status, attempts, queued_ms, "
            "started_ms, finished_ms, duration_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        con.commit()
        con.close()
        proc = subprocess.Popen([binary, "serve", "--data-dir", data, "--listen", "127.0.0.1:0"],
                                stdout=subprocess.DEVNULL, stderr=log)
        wait_for(lambda: open(logpath).read().count(" ready ") >= 2, "the agent's restart")
        addr = re.findall(r"http listening listen=(\S+)", open(logpath).read())[-1]
        host, port = addr.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port))
        headers = {"Authorization": f"Bearer {key}"}
        lat = []
        for i in range(50 + 500):
            t0 = time.perf_counter()
            conn.request("GET", "/v1/workflows/wf-1-1/runs?limit=100", headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            dt = (time.perf_counter() - t0) * 1000
            if resp.status != 200 or len(json.loads(body)["runs"]) != 100:
                raise SystemExit(f"api bench: history read failed: {resp.status}")
            if i >= 50:
                lat.append(dt)
        print(json.dumps({
            "apply_first_s": round(first, 3),
            "apply_median_s": round(statistics.median(rest), 3),
            "apply_rounds": len(rest),
            "history_runs": history,
            "history_p50_ms": round(pct(lat, 50), 2),
            "history_p99_ms": round(pct(lat, 99), 2),
            "history_requests": len(lat),
        }))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
