"""The one exception type for mistakes a user can fix; the entry point prints it as one line."""

import contextlib
import threading


class UserError(Exception):
    """Bad input from the user: the message says what to change."""

    exit_code = 2


def first_line(err: BaseException) -> str:
    """A library error's first line, for quoting inside a one-line UserError."""
    text = str(err).strip().splitlines()
    return text[0] if text else err.__class__.__name__


_INTERRUPTED = False
_SHIELDS = 0  # how many deferred_interrupts() blocks the main thread is in
_PENDING: int | None = None  # a signal that arrived inside one, raised when the last ends


def interrupted() -> bool:
    """Whether Ctrl-C or SIGTERM reached this process (code may have turned it into another exception)."""
    return _INTERRUPTED


def install_interrupt_handlers() -> None:
    """SIGTERM behaves like Ctrl-C: the run in progress unwinds and is recorded KILLED."""
    import signal

    def handler(signum, frame):
        global _INTERRUPTED, _PENDING
        _INTERRUPTED = True
        if _SHIELDS and _PENDING is None:  # a second signal does not wait
            _PENDING = signum
            return
        stop_children(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@contextlib.contextmanager
def deferred_interrupts():
    """Lets a database write finish before Ctrl-C or SIGTERM lands: an interrupt raised inside
    a SQLite transaction leaves the file locked for the rest of the process, so the run it
    interrupted could never be ended KILLED."""
    global _SHIELDS, _PENDING
    if threading.current_thread() is not threading.main_thread():  # signals land in the main thread only
        yield
        return
    _SHIELDS += 1
    try:
        yield
    finally:
        _SHIELDS -= 1
    if not _SHIELDS and _PENDING is not None:
        signum, _PENDING = _PENDING, None
        stop_children(signum)
        raise KeyboardInterrupt(f"signal {signum}")


def stop_children(signum: int, timeout: float = 60.0) -> None:
    """Passes the signal on to this process's worker processes (a sweep's pool) and waits for
    them to end: each ends the run it trains KILLED and exits (``in_worker``). A SIGTERM reaches
    only the process it is sent to, and the pool, interrupted, would kill its workers outright."""
    import multiprocessing
    import os
    import signal
    import time

    children = multiprocessing.active_children()
    for child in children:
        # Ctrl-C already reached the terminal's whole process group: a second SIGINT would not
        # wait for a worker's database write to finish
        with contextlib.suppress(OSError):  # a worker may be gone by now
            if child.pid is not None and (signum != signal.SIGINT or os.getpgid(child.pid) != os.getpgid(0)):
                os.kill(child.pid, signum)
    deadline = time.monotonic() + timeout
    while any(c.is_alive() for c in children) and time.monotonic() < deadline:
        time.sleep(0.05)


def in_worker() -> bool:
    """Whether this process is a worker of another (a sweep's process pool)."""
    import multiprocessing

    return multiprocessing.parent_process() is not None


_NOISE = ("full_key:", "object_type=", "reference_type=", "Set the environment variable HYDRA_FULL_ERROR")


def config_error_line(err: BaseException) -> str:
    """A Hydra/OmegaConf composition error (unknown option or key, a value of the wrong type)
    as one line: its message and its cause's, option lists joined with commas."""
    lines: list[str] = []
    for part in (err, err.__cause__):
        for raw in str(part or "").splitlines():
            line = raw.strip()
            if line.startswith("Config search path"):
                break
            if line and not line.startswith(_NOISE):
                lines.append(line)
    out: list[str] = []
    listing = False  # after "Available options in 'model':" come bare names, one per line
    for line in lines:
        if listing and " " not in line:
            out[-1] += (" " if out[-1].endswith(":") else ", ") + line
            continue
        listing = line.endswith(":")
        out.append(line)
    return "; ".join(dict.fromkeys(out)) or type(err).__name__
