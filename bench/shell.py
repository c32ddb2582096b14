#!/usr/bin/env python3
"""Shell steps: FILES files created at once, each starting a `run: 'true'`
step, until every run is recorded `succeeded` (SQLite); against
`xargs -P2 sh -c true` over the same number of items (the floor for
starting that many shells on two cores), alternating A B A B. Prints JSON.

Usage: shell.py NEXUSD_BIN WORK_DIR FILES ROUNDS
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import time

from common import fresh_fs, succeeded, wait_for

WORKFLOW = """apiVersion: nexus/v1
kind: Workflow
metadata: {name: shell}
spec:
  on: [{event: file.created, pattern: /in/*.txt}]
  concurrency: 64
  steps:
    - name: nothing
      run: 'true'
"""


def nexusd_round(binary, root, files):
    data, config = os.path.join(root, "data"), os.path.join(root, "config")
    os.makedirs(os.path.join(data, "in"))
    os.makedirs(config)
    with open(os.path.join(config, "w.yaml"), "w") as f:
        f.write(WORKFLOW)
    db = os.path.join(data, ".nexus", "nexus.db")
    proc = subprocess.Popen(
        [binary, "serve", "--data-dir", data, "--config-dir", config, "--listen", "127.0.0.1:0",
         "--workers", "64"],
        stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env={**os.environ, "NEXUS_LOG": "warn"},
    )
    try:
        with open(os.path.join(data, "in", "probe.txt"), "w") as f:
            f.write("x")
        wait_for(lambda: succeeded(db) >= 1, "the agent to be ready")
        start = time.monotonic()
        for i in range(files):
            with open(os.path.join(data, "in", f"f{i}.txt"), "w") as f:
                f.write("x")
        wait_for(lambda: succeeded(db) >= files + 1, "every run", timeout=600, every=0.02)
        return time.monotonic() - start
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def xargs_round(files):
    start = time.monotonic()
    subprocess.run(f"seq {files} | xargs -P2 -n1 sh -c true", shell=True, check=True)
    return time.monotonic() - start


def main():
    binary, work, files, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ours, floor = [], []
    for r in range(rounds):
        ours.append(nexusd_round(binary, fresh_fs(work, f"shell-{r}"), files))
        floor.append(xargs_round(files))
    n, f = statistics.median(ours), statistics.median(floor)
    print(json.dumps({
        "files": files,
        "rounds": rounds,
        "nexusd_s": round(n, 3),
        "xargs_s": round(f, 3),
        "nexusd_runs_per_s": round(files / n, 1),
        "xargs_per_s": round(files / f, 1),
        "ratio": round(f / n, 2),
    }))


if __name__ == "__main__":
    main()
