#!/usr/bin/env python3
"""Latency from a file's close to a copy step's result, and idle memory.

Usage: latency.py NEXUSD_BIN WORK_DIR FILES ROUNDS [POSTGRES_URL [WATCHEXEC_BIN]]

For each system, alternating round by round (and rotating the order) so
drift hits all alike, it writes FILES files one at a time into DATA/lat/
and measures, with an inotify watch of DATA/out/, the time from the
writer's close to the whole copy appearing (IN_CLOSE_WRITE or IN_MOVED_TO
with all its bytes). The systems: nexusd on SQLite; nexusd on PostgreSQL
(a fresh database per round, with POSTGRES_URL); the floor,
`inotifywait -m -e close_write` piped into a shell `cp`; and the peer,
watchexec running the same `cp` at its defaults and at `--debounce 1ms`
(with WATCHEXEC_BIN; both with `--on-busy-update=queue`, or a copy started
on the create event, before the bytes, would be all it does). Prints JSON.
"""

import ctypes
import json
import os
import select
import signal
import struct
import subprocess
import sys
import time

from common import fresh_fs, status_kib, wait_for

libc = ctypes.CDLL("libc.so.6", use_errno=True)
IN_CLOSE_WRITE = 0x08
IN_MOVED_TO = 0x80
IN_NONBLOCK = 0o4000

WORKFLOW = """apiVersion: nexus/v1
kind: Workflow
metadata: {name: latency}
spec:
  on: [{event: file.created, pattern: /lat/*.txt}]
  steps:
    - name: copy
      action: file.copy
      with: {from: "{{event.path}}", to: "/out/{{event.name}}"}
"""


class Inotify:
    def __init__(self, path):
        self.fd = libc.inotify_init1(IN_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        wd = libc.inotify_add_watch(self.fd, path.encode(), IN_CLOSE_WRITE | IN_MOVED_TO)
        if wd < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch")

    def wait_for(self, name, deadline):
        """Blocks until `name` is reported closed or moved in; returns the time."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(name)
            r, _, _ = select.select([self.fd], [], [], left)
            if not r:
                continue
            now = time.monotonic()
            buf = os.read(self.fd, 65536)
            i = 0
            while i < len(buf):
                _wd, _mask, _cookie, length = struct.unpack_from("iIII", buf, i)
                got = buf[i + 16 : i + 16 + length].rstrip(b"\0").decode()
                i += 16 + length
                if got == name:
                    return now

    def close(self):
        os.close(self.fd)


def fresh(work, name):
    root = fresh_fs(work, name)
    data = os.path.join(root, "data")
    os.makedirs(os.path.join(data, "lat"))
    os.makedirs(os.path.join(data, "out"))
    return root, data


def start_nexusd(binary, work, database_url=None):
    root, data = fresh(work, "nexusd")
    config = os.path.join(root, "config")
    os.makedirs(config)
    with open(os.path.join(config, "w.yaml"), "w") as f:
        f.write(WORKFLOW)
    log = open(os.path.join(root, "log"), "w")
    args = [binary, "serve", "--data-dir", data, "--config-dir", config, "--listen", "127.0.0.1:0"]
    if database_url:
        args += ["--database-url", database_url]
    proc = subprocess.Popen(args, stderr=log, stdout=subprocess.DEVNULL,
                            env={**os.environ, "NEXUS_LOG": "warn"})
    ready(proc, data)
    return proc, data


def fresh_database(url):
    """A new, empty database beside the one `url` names; its URL."""
    base, _, _ = url.rpartition("/")
    name = "nexusd_bench_latency"
    for sql in (f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}"):
        subprocess.run(["psql", "-qtA", url, "-c", "SET client_min_messages = warning", "-c", sql],
                       check=True, stdout=subprocess.DEVNULL)
    return f"{base}/{name}"


def ready(proc, data):
    """Waits until a probe file is copied (the system is up and watching)."""
    deadline = time.monotonic() + 30
    n = 0
    while True:
        n += 1
        try:
            measure_one(data, f"probe{n}.txt", timeout=0.5)
            return
        except TimeoutError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise


def start_watchexec(binary, work, debounce):
    root, data = fresh(work, "watchexec")
    copy = 'while IFS= read -r e; do p=${e#*:}; [ -f "$p" ] && cp -- "$p" "out/${p##*/}"; done'
    # `queue`: events during a run start another run after it, so a copy
    # started on the create event (before the writer's bytes) is redone.
    # `--no-discover-ignore`: the work dir sits in this repository, whose
    # .gitignore lists it, and watchexec follows ignore files by default.
    args = [binary, "--postpone", "--emit-events-to=stdio", "--on-busy-update=queue",
            "--no-discover-ignore", "-w", "lat"]
    if debounce:
        args += ["--debounce", debounce]
    # One argument: watchexec runs it through its default shell.
    proc = subprocess.Popen(args + ["--", copy], cwd=data, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ready(proc, data)
    return proc, data


def start_floor(work):
    root, data = fresh(work, "floor")
    script = (
        "inotifywait -m -q -e close_write --format '%f' lat | "
        "while read -r f; do cp -- \"lat/$f\" \"out/$f\"; done"
    )
    proc = subprocess.Popen(["sh", "-c", script], cwd=data, start_new_session=True)
    ready(proc, data)
    return proc, data


def measure_one(data, name, timeout=30):
    watch = Inotify(os.path.join(data, "out"))
    try:
        with open(os.path.join(data, "lat", name), "w") as f:
            f.write("x" * 100)
        closed = time.monotonic()
        deadline = closed + timeout
        while True:
            done = watch.wait_for(name, deadline)
            # A copy made while the file was still empty does not count.
            if os.path.getsize(os.path.join(data, "out", name)) == 100:
                return done - closed
    finally:
        watch.close()


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def percentile(values, p):
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]


def idle_rss(binary, work, examples):
    root, data = fresh(work, "idle")
    proc = subprocess.Popen(
        [binary, "serve", "--data-dir", data, "--config-dir", examples, "--listen", "127.0.0.1:0"],
        stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    )
    db = os.path.join(data, ".nexus", "nexus.db")
    wait_for(lambda: os.path.exists(db), db)
    time.sleep(2)  # idle means: started and left alone
    kib = status_kib(proc.pid, "VmRSS")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    return kib


def main():
    binary, work, files, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    pg_url = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] else None
    watchexec = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] else None
    examples = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "workflows.example")
    per_round = max(1, files // rounds)
    starts = {
        "nexusd": lambda: start_nexusd(binary, work),
        "floor": lambda: start_floor(work),
    }
    if pg_url:
        starts["nexusd-postgres"] = lambda: start_nexusd(binary, work, fresh_database(pg_url))
    if watchexec:
        starts["watchexec"] = lambda: start_watchexec(watchexec, work, None)
        starts["watchexec-debounce-1ms"] = lambda: start_watchexec(watchexec, work, "1ms")
    systems = list(starts)
    results = {name: [] for name in systems}
    for r in range(rounds):
        order = systems[r % len(systems):] + systems[:r % len(systems)]
        for system in order:
            proc, data = starts[system]()
            try:
                for i in range(per_round):
                    results[system].append(measure_one(data, f"r{r}-{i}.txt"))
            finally:
                stop(proc)
    out = {}
    for system, values in results.items():
        ms = [v * 1000 for v in values]
        out[system] = {
            "n": len(ms),
            "p50_ms": round(percentile(ms, 50), 3),
            "p99_ms": round(percentile(ms, 99), 3),
            "samples_ms": [round(v, 3) for v in ms],
        }
    out["idle_rss_kib"] = idle_rss(binary, work, examples)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
