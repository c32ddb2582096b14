#!/usr/bin/env python3
"""Throughput: FILES files created as fast as possible, one built-in step
each, until every run is recorded `succeeded`, on SQLite or (with a server
URL) on a fresh PostgreSQL database. Prints JSON with the runs per second,
the agent's CPU time per run and its peak RSS. With AGENTS > 1, that many
agents serve the one data dir (one watches it, all run its runs): the CPU
time is theirs together, the peak RSS the largest of theirs.

Usage: throughput.py NEXUSD_BIN WORK_DIR FILES [postgres://user@host/db [AGENTS]]
"""

import json
import os
import signal
import subprocess
import sys
import time

from common import drop_database, cpu_seconds, fresh_database, fresh_fs, status_kib, succeeded, wait_for

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


def recorded(db):
    """Runs recorded `succeeded`, in the PostgreSQL URL or SQLite file `db`."""
    return pg_succeeded(db) if db.startswith("postgres") else succeeded(db)


def pg_succeeded(url):
    out = subprocess.run(["psql", "-qtA", url, "-c", "SELECT COUNT(*) FROM runs WHERE status = 'succeeded'"],
                         capture_output=True, text=True)
    try:
        return int(out.stdout.strip())
    except ValueError:
        return 0


def pg_count(url, sql):
    out = subprocess.run(["psql", "-qtA", url, "-c", sql], capture_output=True, text=True)
    try:
        return int(out.stdout.strip())
    except ValueError:
        return 0


def main():
    binary, work, files = sys.argv[1], sys.argv[2], int(sys.argv[3])
    server = sys.argv[4] if len(sys.argv) > 4 else None
    agents = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    url = None
    if server:
        name = f"nexus_bench_{os.getpid()}"
        url = fresh_database(server, name)
    root = fresh_fs(work, f"throughput-{'pg' if server else 'sqlite'}-{agents}")
    data, config = os.path.join(root, "data"), os.path.join(root, "config")
    os.makedirs(os.path.join(data, "in"))
    os.makedirs(config)
    with open(os.path.join(config, "w.yaml"), "w") as f:
        f.write(WORKFLOW)
    db = url or os.path.join(data, ".nexus", "nexus.db")
    extra = ["--database-url", url] if url else []
    def start(*args):
        return subprocess.Popen(
            [binary, "serve", "--data-dir", data, "--listen", "127.0.0.1:0", *extra, *args],
            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env={**os.environ, "NEXUS_LOG": "warn"},
        )

    # The first agent holds the definitions (fleet-wide) and watches.
    procs = [start("--config-dir", config)]
    try:
        wait_for(lambda: url or os.path.exists(db), "the agent to start")
        # Ready when a probe file has been copied: the watch is in place.
        with open(os.path.join(data, "in", "probe.txt"), "w") as f:
            f.write("x")
        wait_for(lambda: os.path.exists(os.path.join(data, "out", "probe.txt")), "the agent to be ready")
        for _ in range(agents - 1):
            procs.append(start())
        if agents > 1:
            wait_for(lambda: pg_count(url, "SELECT COUNT(*) FROM nodes WHERE stopped_ms IS NULL") == agents,
                     "every agent to be up")
        cpu = lambda: sum(cpu_seconds(p.pid) for p in procs)
        start, cpu_start = time.monotonic(), cpu()
        for i in range(files):
            with open(os.path.join(data, "in", f"f{i}.txt"), "w") as f:
                f.write("x")
        written = time.monotonic()
        deadline = time.monotonic() + 600
        while recorded(db) < files + 1:  # the probe's run too
            if time.monotonic() > deadline:
                raise TimeoutError(f"{recorded(db) - 1} of {files} runs succeeded")
            time.sleep(0.05)
        done = time.monotonic()
        out = {
            "files": files,
            "write_s": round(written - start, 3),
            "total_s": round(done - start, 3),
            "runs_per_s": round(files / (done - start), 1),
            "peak_rss_kib": max(status_kib(p.pid, "VmHWM") for p in procs),
            # nexusd's own CPU time per run, in microseconds: steadier than
            # the rate, which also depends on how fast the writer goes.
            "cpu_us_per_run": round((cpu() - cpu_start) / files * 1e6, 1),
            "agents": agents,
        }
        if agents > 1:
            # Where the runs ran.
            out["attempts_per_node"] = sorted(
                (pg_count(url, f"SELECT COUNT(*) FROM attempts WHERE node = (SELECT id FROM nodes ORDER BY started_ms, id OFFSET {i} LIMIT 1)")
                 for i in range(agents)), reverse=True)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
        if url:
            drop_database(server, name)
    out["backend"] = "postgres" if url else "sqlite"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
