"""Server processes that cannot outlive the `bertflow` process that started them.

A server started with plain `subprocess.Popen` keeps running when its parent is killed with
SIGKILL: nothing runs in the parent to stop it. So each server is started under a guard, this
file run as a script: the guard leads a process group of its own, asks Linux to signal it when
its parent dies (prctl PR_SET_PDEATHSIG), and then kills the whole group, so the server's own
children (`mlflow server` forks uvicorn) go too. Its own group also keeps a terminal's Ctrl-C,
which goes to the foreground group, away from the server: the parent decides when it stops.

Linux delivers the parent-death signal when the *thread* that forked exits, so start servers
from the main thread. Elsewhere than Linux the guard has no parent-death signal; `stop` still
ends the group on an orderly exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_GONE = signal.SIGUSR1  # what the guard asks to receive when its parent dies


def start(command: Sequence[str], env: Mapping[str, str] | None = None,
          **popen) -> subprocess.Popen:
    """`command` under a guard: the returned process is the guard, leader of the group the
    command runs in; it exits with the command's exit code."""
    guard = [sys.executable, "-I", "-S", __file__, str(os.getpid()), *command]
    return subprocess.Popen(guard, env=env, process_group=0, **popen)


def stop(*processes: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM to each one's group (servers shut down cleanly), SIGKILL to whatever is left of
    them after `timeout_s`. A process that leads no group of its own (started by plain Popen) is
    signalled alone."""
    leaders = {p.pid: _leads_group(p) for p in processes}
    for process in processes:
        if process.poll() is None:
            _signal(process, signal.SIGTERM, leaders[process.pid])
    deadline = time.monotonic() + timeout_s
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal(process, signal.SIGKILL, leaders[process.pid])  # stragglers, even leaderless
        process.wait()


def _leads_group(process: subprocess.Popen) -> bool:
    try:
        return os.getpgid(process.pid) == process.pid
    except ProcessLookupError:  # already gone: its group, if it led one, may still hold others
        return True


def _signal(process: subprocess.Popen, signum: int, group: bool) -> None:
    if not group:
        if process.poll() is None:
            process.send_signal(signum)
        return
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:  # the group is empty: all gone already
        pass


def _kill_group(*_) -> None:
    os.killpg(0, signal.SIGKILL)


def _ask_for_parent_death_signal() -> None:
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except AttributeError:  # not Linux
        return
    if prctl(PR_SET_PDEATHSIG, PARENT_GONE) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def guard(parent: int, command: list[str]) -> int:
    """Run `command` as a child; kill the whole process group if `parent` dies first."""
    signal.signal(PARENT_GONE, _kill_group)
    _ask_for_parent_death_signal()
    if os.getppid() != parent:  # the parent died before the request took effect
        _kill_group()
    # `stop` signals the whole group: the command handles SIGTERM, the guard waits for it.
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)
    pid = os.fork()
    if pid == 0:  # Python-level handlers are reset by exec: the command gets the defaults
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    code = guard(int(sys.argv[1]), sys.argv[2:])
    sys.exit(code if code >= 0 else 128 - code)
