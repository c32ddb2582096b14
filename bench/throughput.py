#!/usr/bin/env python3
"""Throughput: FILES files created as fast as possible, one built-in step
each, until every run is recorded `succeeded` (SQLite). Prints JSON with the
runs per second and the agent's peak RSS.

Usage: throughput.py NEXUSD_BIN WORK_DIR FILES
"""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

WORKFLOW = """apiVersion: nexus/v1
kind: Workflow
metadata: {name: throughput}
spec:
  on: [{event: file.created, pattern: /in/*.txt}]
  steps:
    - name: copy
      action: file.copy
      with: {from: "{{event.path}}", to: "/out/{{event.name}}"}
"""


def succeeded(db):
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM runs WHERE status = 'succeeded'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main():
    binary, work, files = sys.argv[1], sys.argv[2], int(sys.argv[3])
    root = os.path.join(work, "throughput")
    shutil.rmtree(root, ignore_errors=True)
    data, config = os.path.join(root, "data"), os.path.join(root, "config")
    os.makedirs(os.path.join(data, "in"))
    os.makedirs(config)
    with open(os.path.join(config, "w.yaml"), "w") as f:
        f.write(WORKFLOW)
    db = os.path.join(data, ".nexus", "nexus.db")
    proc = subprocess.Popen(
        [binary, "serve", "--data-dir", data, "--config-dir", config, "--listen", "127.0.0.1:0"],
        stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env={**os.environ, "NEXUS_LOG": "warn"},
    )
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(db):
            if time.monotonic() > deadline:
                raise TimeoutError("agent start")
            time.sleep(0.01)
        # Ready when a probe file has been copied: the watch is in place.
        with open(os.path.join(data, "in", "probe.txt"), "w") as f:
            f.write("x")
        while not os.path.exists(os.path.join(data, "out", "probe.txt")):
            if time.monotonic() > deadline:
                raise TimeoutError("agent ready")
            time.sleep(0.01)
        start = time.monotonic()
        for i in range(files):
            with open(os.path.join(data, "in", f"f{i}.txt"), "w") as f:
                f.write("x")
        written = time.monotonic()
        deadline = time.monotonic() + 600
        while succeeded(db) < files + 1:  # the probe's run too
            if time.monotonic() > deadline:
                raise TimeoutError(f"{succeeded(db) - 1} of {files} runs succeeded")
            time.sleep(0.05)
        done = time.monotonic()
        out = {
            "files": files,
            "write_s": round(written - start, 3),
            "total_s": round(done - start, 3),
            "runs_per_s": round(files / (done - start), 1),
            "peak_rss_kib": peak_rss_kib(proc.pid),
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
