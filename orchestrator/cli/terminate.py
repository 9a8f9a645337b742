"""SIGTERM is handled as Ctrl-C is: the state is saved, the resume line printed, exit code 143.

Kubernetes, systemd, Slurm and ``timeout`` send SIGTERM first (SIGKILL only after a grace
period), and ``kill PID`` sends it. Unhandled, it killed the driver at once (Ray's C++ handler
printing its stack dumps), with no last snapshot and no word on how to resume. :func:`install`
turns it into what the SIGINT handler in force does: Tune's (during ``fit``: stop the trials,
take a last snapshot, return) or Python's (``KeyboardInterrupt``). :func:`exit_code` then
answers 143 (128 + 15, what a shell reports for SIGTERM) where Ctrl-C answers 130. Ray installs
its own handler when it starts in this process, so ``ray_session`` installs this one again after
``ray.init``.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

INTERRUPTED = 130  # Ctrl-C
TERMINATED = 143  # SIGTERM
_received = threading.Event()


def install() -> None:
    """Handle SIGTERM as described above (a no-op outside the main thread)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: Any) -> None:
    _received.set()
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:  # SIG_IGN or SIG_DFL: stop as Python's default SIGINT handler would
        raise KeyboardInterrupt


def received() -> bool:
    """True once SIGTERM arrived in this process."""
    return _received.is_set()


def exit_code() -> int:
    """The exit code of an interrupted command: 143 after SIGTERM, else 130."""
    return TERMINATED if received() else INTERRUPTED
