"""Run a command in a fresh network namespace under strace; report every attempt to reach past loopback.

``non_loopback_attempts(cmd, env, timeout)`` returns ``(exit code, offending strace lines)``: each
``connect``/``sendto``/``sendmsg``/``sendmmsg`` to an AF_INET address outside 127.0.0.0/8, to an AF_INET6
address other than ``::1`` (or a v4-mapped loopback), or to port 53 anywhere (a name lookup: in the
namespace a resolver on 127.0.0.53 is still "loopback", but asking it is the start of traffic).
AF_UNIX and AF_NETLINK are fine. ``unavailable()`` says why it cannot run here (or None).

Benchmark scripts may import this file by path; it depends on nothing but the standard library.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

_V4 = re.compile(r'sa_family=AF_INET, sin_port=htons\((\d+)\), sin_addr=inet_addr\("([^"]+)"\)')
_V6 = re.compile(r'sa_family=AF_INET6, sin6_port=htons\((\d+)\),.*?inet_pton\(AF_INET6, "([^"]+)"')
_CALLS = ("connect", "sendto", "sendmsg", "sendmmsg")


def _unshare_prefix() -> list[str] | None:
    """``unshare -n`` (root) or ``unshare -rn`` (a user namespace), whichever works here."""
    if shutil.which("unshare") is None:
        return None
    for prefix in (["unshare", "-n"], ["unshare", "-rn"]):
        try:
            if subprocess.run([*prefix, "true"], capture_output=True, timeout=30, check=False).returncode == 0:
                return prefix
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


def unavailable() -> str | None:
    """Why the check cannot run on this machine, or None when it can."""
    if shutil.which("strace") is None:
        return "strace is not installed"
    if _unshare_prefix() is None:
        return "cannot create a network namespace here (unshare -n and unshare -rn are not permitted)"
    probe = subprocess.run(["strace", "-f", "-qq", "-o", "/dev/null", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"strace cannot trace here: {probe.stderr.decode(errors='replace').strip()[:200]}"
    return None


def _loopback(addr: str) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def offending(line: str) -> bool:
    """Whether one strace line is a connection attempt past loopback (or a name lookup)."""
    if not any(f"{c}(" in line for c in _CALLS):
        return False
    for port, addr in [*_V4.findall(line), *_V6.findall(line)]:
        if not _loopback(addr) or int(port) == 53:
            return True
    return False


def non_loopback_attempts(cmd: list[str], env: dict[str, str] | None, timeout: float) -> tuple[int, list[str]]:
    """Run ``cmd`` (with ``env``) in a new network namespace with only loopback up, traced by strace.

    Returns the exit code and the strace lines of every attempt to reach an address outside loopback.
    Raises RuntimeError when the check cannot run (see :func:`unavailable`).
    """
    prefix = _unshare_prefix()
    if prefix is None or shutil.which("strace") is None:
        raise RuntimeError(unavailable() or "network check unavailable")
    with tempfile.TemporaryDirectory(prefix="netcheck-") as tmp:
        log = Path(tmp) / "strace.log"
        traced = ["strace", "-f", "-qq", "-e", f"trace={','.join(_CALLS)}", "-e", "signal=none", "-o", str(log), *cmd]
        lo_up = "ip link set lo up 2>/dev/null; " if shutil.which("ip") else ""
        proc = subprocess.run(
            [*prefix, "sh", "-c", lo_up + "exec " + shlex.join(traced)],
            env=env,
            timeout=timeout,
            check=False,
        )
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return proc.returncode, [line for line in lines if offending(line)]
