"""`docker top`: what /proc says about the processes of a container's cgroup."""
from __future__ import annotations

import os
import pwd


def _user_name(uid: int) -> str:
    """The host's name for a uid (as `ps` on the host shows it), or the number."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _cpu_time(ticks: int) -> str:
    secs = ticks // os.sysconf("SC_CLK_TCK")
    return f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}"


def process_rows(pids: list[int]) -> list[dict]:
    """PID, PPID, USER, TIME, CMD per process; processes that exit meanwhile are skipped."""
    rows = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat_line = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
            uid = os.stat(f"/proc/{pid}").st_uid
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = stat_line[stat_line.rindex(b")") + 2:].split()
        comm = stat_line[stat_line.index(b"(") + 1:stat_line.rindex(b")")].decode(errors="replace")
        args = [a.decode(errors="replace") for a in cmdline.split(b"\0") if a]
        rows.append({"PID": pid, "PPID": int(fields[1]), "USER": _user_name(uid),
                     "TIME": _cpu_time(int(fields[11]) + int(fields[12])),
                     "CMD": " ".join(args) if args else f"[{comm}]"})
    return rows
