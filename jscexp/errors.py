"""The one exception type for mistakes a user can fix; the entry point prints it as one line."""


class UserError(Exception):
    """Bad input from the user: the message says what to change."""


def first_line(err: BaseException) -> str:
    """A library error's first line, for quoting inside a one-line UserError."""
    text = str(err).strip().splitlines()
    return text[0] if text else err.__class__.__name__


_INTERRUPTED = False


def interrupted() -> bool:
    """Whether Ctrl-C or SIGTERM reached this process (code may have turned it into another exception)."""
    return _INTERRUPTED


def install_interrupt_handlers() -> None:
    """SIGTERM behaves like Ctrl-C: the run in progress unwinds and is recorded KILLED."""
    import signal

    def handler(signum, frame):
        global _INTERRUPTED
        _INTERRUPTED = True
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
