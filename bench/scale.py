#!/usr/bin/env python3
"""Scale: 100,000 files in 10,000 directories (SQLite).

- RSS while watching them, idle, once indexed (after a restart; scenario
  4b, target <= 60 MB);
- a restart with all of them unchanged: time from start to ready
  (scenario 5a, target <= 1 s);
- 1,000 of them changed while stopped: time from start until the 1,000
  runs they start are recorded `succeeded` (scenario 5b).

Usage: scale.py NEXUSD_BIN WORK_DIR DIRS FILES_PER_DIR CHANGED
"""

import json
import os
import signal
import subprocess
import sys
import time

from common import fresh_fs, status_kib, succeeded, wait_for

WORKFLOW = """apiVersion: nexus/v1
kind: Workflow
metadata: {name: changed}
spec:
  on: [{event: file.updated, pattern: "/**/*.txt"}]
  steps:
    - name: note
      action: log
      with: {message: "{{event.path}}"}
"""


class Agent:
    def __init__(self, binary, data, config, log):
        self.args = [binary, "serve", "--data-dir", data, "--config-dir", config, "--listen", "127.0.0.1:0"]
        self.log = log
        self.proc = None

    def start(self):
        """Starts the agent; returns the seconds until it logged `ready`."""
        before = open(self.log).read().count(" ready ") if os.path.exists(self.log) else 0
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=open(self.log, "a"),
                                     env={**os.environ, "NEXUS_LOG": "info"})
        wait_for(lambda: open(self.log).read().count(" ready ") > before, "ready", timeout=600, every=0.005)
        return time.monotonic() - t0

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)


def main():
    binary, work = sys.argv[1], sys.argv[2]
    dirs, per_dir, changed = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    root = fresh_fs(work, "scale")
    data, config = os.path.join(root, "data"), os.path.join(root, "config")
    os.makedirs(config)
    with open(os.path.join(config, "w.yaml"), "w") as f:
        f.write(WORKFLOW)
    for d in range(dirs):
        path = os.path.join(data, f"d{d // 100:03d}", f"e{d % 100:02d}")
        os.makedirs(path)
        for i in range(per_dir):
            with open(os.path.join(path, f"f{i}.txt"), "w") as f:
                f.write("x")
    files = dirs * per_dir
    agent = Agent(binary, data, config, os.path.join(root, "agent.log"))
    first = agent.start()
    db = os.path.join(data, ".nexus", "nexus.db")
    agent.stop()
    restart = agent.start()
    time.sleep(1)  # idle: what it holds to watch them
    rss = status_kib(agent.proc.pid, "VmRSS")
    agent.stop()
    for k in range(changed):
        d = k % dirs
        path = os.path.join(data, f"d{d // 100:03d}", f"e{d % 100:02d}", f"f{(k // dirs) % per_dir}.txt")
        with open(path, "a") as f:
            f.write("y")
    t0 = time.monotonic()
    agent.start()
    wait_for(lambda: succeeded(db) >= changed, "the catch-up runs", timeout=600)
    catch_up = time.monotonic() - t0
    agent.stop()
    print(json.dumps({
        "files": files,
        "dirs": dirs,
        "first_start_s": round(first, 3),
        "watching_rss_kib": rss,
        "restart_unchanged_s": round(restart, 3),
        "changed": changed,
        "catch_up_changed_s": round(catch_up, 3),
    }))


if __name__ == "__main__":
    main()
