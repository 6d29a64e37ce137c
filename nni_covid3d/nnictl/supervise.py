"""Run an NNI trial's training in a child process, so that a trial killed by a signal ends FAILED with a reason.

Why a second process: the out-of-memory killer and job schedulers end a process with SIGKILL, which
cannot be caught in-process; a trial that trains in its own process just vanishes, with nothing in
its logs. NNI 3.0's trial keeper then sees an exit without an exit code, and its training service
reports that as USER_CANCELED, as if a user had cancelled the trial
(``nni_node/training_service/v3/compat.js``, ``onTrialEnd``: exit code 0 is SUCCEEDED, another code
FAILED, no code USER_CANCELED). A small parent that only waits for the training child sees how the
child ended, says so on stderr (the web UI's "View trial error"), and exits ``128 + signal``, which
NNI records as FAILED.

The parent forwards SIGINT/SIGTERM to the child: NNI stops a trial (user cancel, ``nnictl stop``)
with SIGINT, and SIGKILL 5 s later (``nni_node/common/trial_keeper/process.js``, ``kill``). When the
parent itself was asked to stop, it ends by that same signal once the child has ended, so the trial
is still reported as cancelled. On Linux the child is killed if the parent dies (``PR_SET_PDEATHSIG``),
so NNI's SIGKILL of the parent leaves no orphan training.

This module imports only the standard library: the parent must stay small next to the training.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Callable, Mapping, Sequence

__all__ = ["WORKER_ENV", "launched_by_nni", "should_supervise", "supervise", "death_reason"]

#: Set to ``1`` in the supervised child's environment: that process runs the trial itself.
WORKER_ENV = "NNI_COVID3D_TRIAL_WORKER"

#: Signals that mean "stop the trial": forwarded to the child.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: The usual cause of a signal that ends a training process.
_CAUSES = {
    signal.SIGKILL: "the usual cause is the out-of-memory killer or a scheduler; see dmesg / the job log",
    signal.SIGSEGV: "a crash in native code (a library, driver or hardware fault)",
    signal.SIGBUS: "a crash in native code, or shared memory (/dev/shm) running out",
    signal.SIGABRT: "an abort in native code; the lines above in this log may say why",
}


def launched_by_nni(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment is that of a trial process started by NNI's manager.

    The same rule as NNI's own trial runtime (``nni/runtime/trial_command_channel/__init__.py``):
    a command channel URL, or an ``NNI_PLATFORM`` other than ``unittest``.
    """
    environ = os.environ if environ is None else environ
    platform = environ.get("NNI_PLATFORM")
    return bool(environ.get("NNI_TRIAL_COMMAND_CHANNEL")) or platform not in (None, "", "unittest")


def should_supervise(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process should supervise the trial: started by NNI and not the supervised child."""
    environ = os.environ if environ is None else environ
    return launched_by_nni(environ) and environ.get(WORKER_ENV) != "1"


def death_reason(pid: int, signum: int) -> str:
    """The one line printed when the training child ``pid`` was ended by signal ``signum``."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    cause = _CAUSES.get(signum, "some process sent it that signal")
    return (f"trial failed: the training process (pid {pid}) was killed by {name} (signal {signum}); "
            f"{cause}")


def supervise(command: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run ``command`` as a child, wait for it, and return the exit code this process should end with.

    * the child exits with a code: that code (its own error message is already in stderr);
    * the child is killed by a signal: :func:`death_reason` on stderr, and ``128 + signal``;
    * this process gets SIGINT/SIGTERM: the signal is forwarded to the child; once the child has
      ended, this process ends by that signal too (a cancelled trial), unless the child had
      finished successfully (exit code 0).
    """
    stop_signals: list[int] = []
    child: subprocess.Popen | None = None

    def forward(signum: int, _frame: object) -> None:
        stop_signals.append(signum)
        if child is not None:
            child.send_signal(signum)  # no-op once the child has been reaped

    previous = {signum: signal.signal(signum, forward) for signum in STOP_SIGNALS}
    try:
        child = subprocess.Popen(list(command), env=None if env is None else dict(env),
                                 preexec_fn=_die_with_parent())
        if stop_signals:  # a stop signal came while the child was being started
            child.send_signal(stop_signals[-1])
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if stop_signals and code != 0:
        _end_by_signal(stop_signals[0])
        return 128 + stop_signals[0]  # only reached if the signal was blocked
    if code < 0:
        print(death_reason(child.pid, -code), file=sys.stderr, flush=True)
        return 128 - code
    return code


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGKILL the child when this process dies (``None`` elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: nothing is loaded between fork and exec
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _end_by_signal(signum: int) -> None:
    """End this process by ``signum`` with its default action (so NNI sees a signal, not an exit code)."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
