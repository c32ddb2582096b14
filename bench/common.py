"""What the bench scripts share: reading the agent's records and memory."""

import os
import sqlite3
import time


def succeeded(db):
    """Runs recorded `succeeded` in the SQLite database `db` (0 before it exists)."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM runs WHERE status = 'succeeded'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def scalar(db, sql):
    """One number from the agent's database: a SQLite file read only, or a
    PostgreSQL URL through psql; 0 while it cannot be read."""
    if db.startswith("postgres"):
        import subprocess
        out = subprocess.run(["psql", "-qtA", db, "-c", sql], capture_output=True, text=True)
        try:
            return int(out.stdout.strip())
        except ValueError:
            return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(sql).fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def fresh_database(server, name):
    """A new, empty PostgreSQL database `name` on `server`: its URL."""
    import subprocess
    subprocess.run(["psql", "-q", server, "-c", f"DROP DATABASE IF EXISTS {name}"], check=True, capture_output=True)
    subprocess.run(["psql", "-q", server, "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return server.rsplit("/", 1)[0] + "/" + name


def drop_database(server, name):
    """Drops the database `fresh_database` made, its sessions closed."""
    import subprocess
    subprocess.run(["psql", "-q", server, "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True)


def wait_for(cond, what, timeout=30, every=0.01):
    """Polls `cond` every `every` seconds until it holds; TimeoutError(what)
    after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(every)


def status_kib(pid, field):
    """A memory figure of /proc/PID/status in KiB: `VmRSS`, `VmHWM`, ..."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """User and system CPU seconds the process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are the 14th and 15th fields; the name (2nd) is cut off.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_fresh_count = 0


def fresh_fs(work, name):
    """A directory on an ext4 filesystem made just now (an image file, loop
    mounted), unmounted when the script ends. ext4 allocates around the
    inodes freed in the last minutes, so a burst written where many files
    were just deleted (by an earlier scenario) runs several times slower;
    on a new filesystem every run starts alike. Where that cannot be done
    (not root, no loop device), a new plain directory, said on stderr."""
    import atexit
    import os
    import shutil
    import subprocess
    import sys

    global _fresh_count
    _fresh_count += 1
    mnt = os.path.join(os.path.abspath(work), f"fs-{name}-{os.getpid()}-{_fresh_count}")
    img = mnt + ".img"
    os.makedirs(mnt)
    try:
        with open(img, "w") as f:
            f.truncate(8 << 30)  # sparse: only what is written takes space
        subprocess.run(["mkfs.ext4", "-q", "-F", img], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "loop", img, mnt], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"bench: no fresh filesystem for {name} ({e}); a plain directory instead", file=sys.stderr)
        if os.path.exists(img):
            os.remove(img)
        return mnt

    def gone():
        subprocess.run(["umount", "-l", mnt], capture_output=True)
        os.remove(img)
        shutil.rmtree(mnt, ignore_errors=True)

    atexit.register(gone)
    return mnt
