"""Runs a script as on Windows, as far as Linux allows: without fcntl, signal.SIGHUP and os.sysconf, which
Windows lacks, with a stand-in for msvcrt, Windows's file locks, built on fcntl's (a lock another process
holds: PermissionError, as msvcrt raises), and with new processes spawned, as on Windows (and macOS).

    python tests/as_on_windows.py ppo_discrete.py --total-timesteps 2048
"""

import fcntl
import multiprocessing
import os
import runpy
import signal
import subprocess  # noqa: F401  (it takes any msvcrt for Windows's: imported before the stand-in is)
import sys
import types


def locking(fd: int, mode: int, nbytes: int):
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise PermissionError(13, "Permission denied") from None


msvcrt = types.ModuleType("msvcrt")
msvcrt.LK_NBLCK = 2
msvcrt.locking = locking
sys.modules.update(fcntl=None, msvcrt=msvcrt)  # None: `import fcntl` raises ImportError
del signal.SIGHUP, os.sysconf
multiprocessing.set_start_method("spawn")
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
