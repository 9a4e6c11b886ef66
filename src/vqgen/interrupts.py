"""Stop requests: Ctrl-C (SIGINT), SIGTERM and SIGHUP, handled one way.

A cluster that preempts a job (SLURM's `scancel`, Kubernetes, `docker stop`)
sends SIGTERM; a closed terminal or ssh session sends SIGHUP. While a vqgen
command runs (`handled`), each of the three raises `Interrupted`, a
`KeyboardInterrupt`, so every place that handles Ctrl-C handles them alike:
training keeps its state and says how to resume, and a command exits with
128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP)
after one line. A signal the process was started to ignore (`nohup`) stays
ignored.

- `deferred()`: held back until the block ends, so that a checkpoint is never
  cut in half by a stop; nested blocks raise when the outermost ends.
- `polled()`: held back, and never raised by the block: the code inside asks
  `received()` where it can stop (the processes of a distributed run agree
  there on stopping together, see distributed.py).
- `check()`: where work goes on only if no stop came, raise one that came.
- A second stop signal ends the process at once: this process's temporary
  files are removed first (files.py) and `on_exit_now` hooks run (a launcher
  passes the signal on). A signal within `REPEAT_SECONDS` of the first is the
  same stop delivered twice (by the scheduler, and passed on by a launcher).
- `blocked()`: no stop signal lands inside the block; one that arrives waits
  until it ends (Python swallows an exception raised in its fork hooks). The
  signal is blocked in this thread and held back as well: one sent to the
  process may be taken by another thread (torch's), whose handler would
  otherwise raise in this one at once.
- `as_worker(parent)`: in a worker process (decoding), stop signals are left to
  the parent, which stops its workers; on Linux the worker ends with it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable

SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None)
REPEAT_SECONDS = 2.0   # a stop signal this soon after the first is the same stop, delivered twice
PR_SET_PDEATHSIG = 1   # prctl's option: the signal a process gets when its parent ends (Linux)


def signal_name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived: Ctrl-C, SIGTERM or SIGHUP (`signum`)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal_name(signum))
        self.signum = int(signum)


def signal_of(e: BaseException) -> int:
    """The signal behind an interruption: a KeyboardInterrupt raised elsewhere counts as Ctrl-C."""
    return getattr(e, "signum", signal.SIGINT)


def exit_code(signum: int) -> int:
    return 128 + signum


def by(signum: int) -> str:
    """' by SIGTERM', to follow 'Interrupted'; nothing for Ctrl-C, which people know by that word."""
    return "" if signum == signal.SIGINT else f" by {signal_name(signum)}"


class _State:
    depth = 0                      # nested `handled` blocks
    previous: dict = {}            # the handlers before the outermost one
    deferring = 0                  # nested `deferred` and `polled` blocks
    signum: int | None = None      # the stop signal received
    at = 0.0                       # when
    held = False                   # received while deferring, not raised yet
    exit_hooks: list = []


_state = _State()


def _handle(signum: int, frame) -> None:
    now = time.monotonic()
    if _state.signum is not None:
        if now - _state.at < REPEAT_SECONDS:
            return   # the same stop, delivered twice
        _exit_now(signum)
    _state.signum, _state.at = signum, now
    if _state.deferring:
        _state.held = True
        return
    raise Interrupted(signum)


def _exit_now(signum: int) -> None:
    """A second stop: end the process here, leaving no temporary file of its own behind."""
    from vqgen import files

    for hook in list(_state.exit_hooks):
        try:
            hook(signum)
        except Exception:  # noqa: BLE001 - nothing may keep the process from ending now
            pass
    files.discard_own_temps()
    try:
        os.write(2, f"Interrupted again{by(signum)}: stopped at once\n".encode())
    except OSError:
        pass
    os._exit(exit_code(signum))


@contextmanager
def handled():
    """Ctrl-C, SIGTERM and SIGHUP raise `Interrupted` in this block (in the main thread; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _state.depth == 0:
        _state.previous = {}
        for s in SIGNALS:
            current = signal.getsignal(s)
            if current == signal.SIG_IGN:   # nohup, or Ctrl-C of a job started in the background: stays ignored
                continue
            _state.previous[s] = current
            signal.signal(s, _handle)
        _state.signum, _state.held, _state.deferring = None, False, 0
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth == 0:
            for s, previous in _state.previous.items():
                signal.signal(s, previous if previous is not None else signal.SIG_DFL)
            _state.previous, _state.signum, _state.held, _state.exit_hooks = {}, None, False, []


def received() -> int:
    """The stop signal received while handled (0: none)."""
    return _state.signum or 0


def stop(signum: int) -> None:
    """Raise the interruption for `signum` here (where a polled block decided to stop)."""
    _state.held = False
    raise Interrupted(signum)


def check() -> None:
    """Where work goes on only if no stop came: raise the one that came, unless held back. A stop raised
    before is raised again (Python ignores an exception raised in a finaliser or a fork hook)."""
    if _state.signum is not None and not _state.deferring:
        stop(_state.signum)


@contextmanager
def deferred():
    """Hold stop signals back until the block ends, so that what it writes is never cut in half by one."""
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1
    if _state.deferring == 0 and _state.held:
        stop(_state.signum)


@contextmanager
def polled():
    """Hold stop signals back in this block and never raise them for it: the code inside asks `received()`."""
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1


@contextmanager
def raising():
    """Stop signals raise at once in this block, even inside a deferred or polled one."""
    saved = _state.deferring
    _state.deferring = 0
    try:
        if _state.held:
            stop(_state.signum)
        yield
    finally:
        _state.deferring = saved


@contextmanager
def on_exit_now(hook: Callable[[int], None]):
    """`hook(signum)` runs if a second signal ends the process at once during this block."""
    _state.exit_hooks.append(hook)
    try:
        yield
    finally:
        if hook in _state.exit_hooks:
            _state.exit_hooks.remove(hook)


@contextmanager
def blocked():
    """No stop signal is delivered in this block (main thread); one that arrives is raised when it ends.

    Blocking it in this thread is not enough: the kernel gives a signal sent to the process to any thread
    that does not block it, and Python then runs the handler in the main thread at once, wherever it is (in
    a fork hook, say). So the stop is also held back (`deferred`), and blocking keeps it from a process
    forked here before that process has set its own handlers."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    with deferred():
        before = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, before)


def as_worker(parent: int) -> None:
    """First thing in a worker process: stop signals are its parent's to handle (the parent stops its workers);
    on Linux the worker is killed when the parent ends, however it ends."""
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        die_with_parent(signal.SIGKILL)()
        if os.getppid() != parent:   # the parent ended before that was set
            os._exit(1)
    if hasattr(signal, "pthread_sigmask"):   # a worker forked in `blocked()` starts with them blocked
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def die_with_parent(signum: int) -> Callable[[], None]:
    """Linux: a function that, called in a process, has it get `signum` when the thread that started it ends
    (prctl PR_SET_PDEATHSIG); one that does nothing where the C library has no prctl. The library is looked up
    here, so the function only makes the call: safe between fork and exec, as a `subprocess` `preexec_fn`."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return lambda: None
    return lambda: prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
