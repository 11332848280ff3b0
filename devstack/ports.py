"""Which local process listens on a TCP port, and a check that the ports a stack needs are free.

A stack must never take someone else's server for its own: `make run` after a
crashed run used to probe the old exchange and API, say "ready", and only then
fail on the port. So every port is checked before anything starts, and a
readiness probe is believed only if the server that answered is ours.

The holder is found in /proc (Linux): the socket's inode in /proc/net/tcp{,6},
then the process with that inode among its open files. Processes of other users
cannot be looked into; then only the port is named. No /proc, no holder: the
check itself (a bind) works everywhere.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
# Socket states in /proc/net/tcp: LISTEN, and CLOSE for a socket bound but not (yet) listening.
_BOUND_STATES = {"0A", "07"}


class PortInUse(RuntimeError):
    """A port the stack needs is taken; the message names it and, where found, who holds it."""


@dataclass(frozen=True)
class PortHolder:
    pid: int
    command: str


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could bind host:port now (as ours do, with SO_REUSEADDR: TIME_WAIT is no obstacle)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def _listening_inodes(port: int, proc: Path) -> set[str]:
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEX_IP:HEX_PORT; st is the state; inode is field 9.
            if len(fields) > 9 and fields[3] in _BOUND_STATES and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    inodes.discard("0")  # no socket to find behind it
    return inodes


def command_line(pid: int, proc: Path = PROC) -> str:
    try:
        return (proc / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def port_holders(port: int, proc: Path = PROC) -> list[PortHolder]:
    """Processes with a socket listening on port (all addresses), as far as this user may see."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port, proc)}
    if not wanted:
        return []
    holders = [
        PortHolder(int(entry.name), command_line(int(entry.name), proc))
        for entry in proc.iterdir()
        if entry.name.isdigit() and _open_sockets(entry) & wanted
    ]
    return sorted(holders, key=lambda holder: holder.pid)


def _open_sockets(process_dir: Path) -> set[str]:
    try:
        fds = list((process_dir / "fd").iterdir())
    except OSError:
        return set()  # exited meanwhile, or another user's
    links: set[str] = set()
    for fd in fds:
        # Each one on its own: the process may close any of them while we look.
        with contextlib.suppress(OSError):
            links.add(fd.readlink().as_posix())
    return links


def held_by_any(port: int, pids: set[int], proc: Path = PROC) -> bool | None:
    """Whether one of pids holds port; None when /proc shows no socket on it at all (cannot tell)."""
    if not _listening_inodes(port, proc):
        return None
    # Our own processes are always visible: a socket nobody visible holds is someone else's.
    return any(holder.pid in pids for holder in port_holders(port, proc))


def describe_holders(port: int, proc: Path = PROC) -> str:
    holders = port_holders(port, proc)
    if not holders:
        return "held by a process this user cannot see"
    return "held by " + ", ".join(f"pid {holder.pid} ({holder.command or '?'})" for holder in holders)


def require_free_ports(ports: Mapping[str, int], host: str = "127.0.0.1", proc: Path = PROC) -> None:
    """Raise PortInUse naming every taken or twice-used port in ports (what it is for -> port)."""
    problems: list[str] = []
    seen: dict[int, str] = {}
    for purpose, port in ports.items():
        if port in seen:
            problems.append(f"port {port} is asked for both the {seen[port]} and the {purpose}")
            continue
        seen[port] = purpose
        if not port_is_free(port, host):
            problems.append(f"port {port} ({purpose}) is in use, {describe_holders(port, proc)}")
    if problems:
        raise PortInUse("; ".join(problems))
