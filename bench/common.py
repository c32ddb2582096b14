"""What the bench scripts share: reading the agent's records and memory."""

import sqlite3


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


def status_kib(pid, field):
    """A memory figure of /proc/PID/status in KiB: `VmRSS`, `VmHWM`, ..."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0
