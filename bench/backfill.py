#!/usr/bin/env python3
"""Backfill: FILES files already in the data dir (indexed by the agent
while no workflow took them), then a workflow with one built-in step
(`log`) and `nexusd workflows backfill --detach`: the seconds from the
request until every file's run is recorded `succeeded`, runs/s, and the
agent's RSS before and at most meanwhile (sampled every 0.1 s; the first
indexing of the files, before, is not counted), on SQLite or (with a server URL) a fresh
PostgreSQL database. Prints JSON.

Usage: backfill.py NEXUSD_BIN WORK_DIR FILES [postgres://user@host/db]
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

from common import drop_database, fresh_database, fresh_fs, scalar as count, status_kib, wait_for

ELSEWHERE = """apiVersion: nexus/v1
kind: Workflow
metadata: {name: elsewhere}
spec:
  on: [{event: file.created, pattern: /nowhere/*}]
  steps: [{name: s, action: log, with: {message: x}}]
"""
WORKFLOW = """apiVersion: nexus/v1
kind: Workflow
metadata: {name: backfill}
spec:
  on: [{event: file.created, pattern: "/in/**"}]
  steps:
    - name: note
      action: log
      with: {message: "{{event.path}}"}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    binary, work, files = sys.argv[1], sys.argv[2], int(sys.argv[3])
    server = sys.argv[4] if len(sys.argv) > 4 else None
    url = None
    if server:
        name = f"nexus_bench_bf_{os.getpid()}"
        url = fresh_database(server, name)
    root = fresh_fs(work, f"backfill-{'pg' if server else 'sqlite'}")
    data, config = os.path.join(root, "data"), os.path.join(root, "config")
    os.makedirs(config)
    for d in range(100):
        os.makedirs(os.path.join(data, "in", f"d{d:02}"))
    for i in range(files):
        with open(os.path.join(data, "in", f"d{i % 100:02}", f"f{i:06}.txt"), "w") as f:
            f.write("x")
    with open(os.path.join(config, "elsewhere.yaml"), "w") as f:
        f.write(ELSEWHERE)
    db = url or os.path.join(data, ".nexus", "nexus.db")
    extra = ["--database-url", url] if url else []
    port = free_port()
    log_path = os.path.join(root, "agent.log")
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [binary, "serve", "--data-dir", data, "--config-dir", config, "--listen", f"127.0.0.1:{port}", *extra],
        stderr=log, stdout=subprocess.DEVNULL, env={**os.environ, "NEXUS_LOG": "info"},
    )
    try:
        wait_for(lambda: count(db, "SELECT COUNT(*) FROM file_index") >= files,
                 "the files to be indexed", timeout=1200, every=0.5)
        with open(os.path.join(config, "backfill.yaml"), "w") as f:
            f.write(WORKFLOW)
        wait_for(lambda: "definitions reloaded workflows=2" in open(log_path).read(),
                 "the workflow to be live", timeout=120, every=0.1)
        admin = [binary, "admin", "--data-dir", data, *extra]
        subprocess.run([*admin, "create-user", "bench", "--role", "writer"], check=True, capture_output=True)
        key = subprocess.run([*admin, "create-user-key", "bench"], check=True, capture_output=True, text=True).stdout.strip()
        env = {**os.environ, "NEXUS_URL": f"http://127.0.0.1:{port}", "NEXUS_API_KEY": key}
        before = status_kib(proc.pid, "VmRSS")
        start = time.monotonic()
        begun = subprocess.run([binary, "workflows", "backfill", "backfill", "--detach", "-o", "json"],
                               check=True, capture_output=True, text=True, env=env)
        planned = json.loads(begun.stdout)["files"]
        peak = 0
        deadline = start + 1200
        done_sql = "SELECT COUNT(*) FROM runs WHERE backfill IS NOT NULL AND status = 'succeeded'"
        while count(db, done_sql) < files:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count(db, done_sql)} of {files} runs succeeded")
            peak = max(peak, status_kib(proc.pid, "VmRSS"))
            time.sleep(0.1)
        done = time.monotonic()
        peak = max(peak, status_kib(proc.pid, "VmRSS"))
        out = {
            "files": files,
            "planned": planned,
            "backfill_s": round(done - start, 2),
            "runs_per_s": round(files / (done - start), 1),
            "rss_before_kib": before,
            "peak_rss_kib": peak,
            "runs": count(db, "SELECT COUNT(*) FROM runs WHERE backfill IS NOT NULL"),
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
        if url:
            drop_database(server, name)
    out["backend"] = "postgres" if url else "sqlite"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
