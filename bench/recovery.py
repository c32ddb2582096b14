#!/usr/bin/env python3
"""Recovery: FILES runs left unfinished by `kill -9` (queued behind a step
that never ends, one worker), then a start with the step made quick: the
seconds until every run is recorded `succeeded`, and the agent's peak RSS
meanwhile, on SQLite or (with a server URL) a fresh PostgreSQL database.
Prints JSON.

Usage: recovery.py NEXUSD_BIN WORK_DIR FILES [postgres://user@host/db]
"""

import json
import os
import signal
import subprocess
import sys
import time

from common import drop_database, fresh_database, fresh_fs, scalar, status_kib, wait_for

WORKFLOW = """apiVersion: nexus/v1
kind: Workflow
metadata: {{name: recovery}}
spec:
  on: [{{event: file.created, pattern: /in/*.txt}}]
  steps:
    - {step}
"""
BLOCKED = "{name: work, run: 'exec sleep 3600'}"
QUICK = 'name: work\n      action: log\n      with: {message: "{{event.path}}"}'


def count(db, where):
    return scalar(db, f"SELECT COUNT(*) FROM runs WHERE {where}")


def main():
    binary, work, files = sys.argv[1], sys.argv[2], int(sys.argv[3])
    server = sys.argv[4] if len(sys.argv) > 4 else None
    url = None
    if server:
        name = f"nexus_bench_rec_{os.getpid()}"
        url = fresh_database(server, name)
    root = fresh_fs(work, f"recovery-{'pg' if server else 'sqlite'}")
    data, config = os.path.join(root, "data"), os.path.join(root, "config")
    os.makedirs(os.path.join(data, "in"))
    os.makedirs(config)
    definition = os.path.join(config, "w.yaml")
    with open(definition, "w") as f:
        f.write(WORKFLOW.format(step=BLOCKED))
    db = url or os.path.join(data, ".nexus", "nexus.db")
    extra = ["--database-url", url] if url else []

    def serve(*more):
        return subprocess.Popen(
            [binary, "serve", "--data-dir", data, "--config-dir", config, "--listen", "127.0.0.1:0", *extra, *more],
            stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env={**os.environ, "NEXUS_LOG": "warn"},
        )

    proc = serve("--workers", "1")
    try:
        wait_for(lambda: url or os.path.exists(db), "the agent to start")
        for i in range(files):
            with open(os.path.join(data, "in", f"f{i:06}.txt"), "w") as f:
                f.write("x")
        wait_for(lambda: count(db, "1 = 1") >= files, "every run to be recorded", timeout=1200, every=0.5)
        proc.kill()
        proc.wait()
        with open(definition, "w") as f:
            f.write(WORKFLOW.format(step=QUICK))
        start = time.monotonic()
        proc = serve()
        peak = 0
        deadline = start + 1200
        while count(db, "status = 'succeeded'") < files:
            if time.monotonic() > deadline:
                done_runs = count(db, "status = 'succeeded'")
                raise TimeoutError(f"{done_runs} of {files} runs succeeded")
            peak = max(peak, status_kib(proc.pid, "VmHWM"))
            time.sleep(0.1)
        done = time.monotonic()
        peak = max(peak, status_kib(proc.pid, "VmHWM"))
        out = {
            "runs": files,
            "recovery_s": round(done - start, 2),
            "runs_per_s": round(files / (done - start), 1),
            "peak_rss_kib": peak,
            "succeeded_twice": count(db, "attempts > 1"),
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        if url:
            drop_database(server, name)
    out["backend"] = "postgres" if url else "sqlite"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
