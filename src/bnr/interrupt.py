"""Stopping cleanly on SIGINT (Ctrl-C) and SIGTERM (what schedulers, `kill` and container runtimes send).

Outside training both signals end the command at once (`KeyboardInterrupt`; the CLI prints how to resume).
Inside the training loop the first signal is deferred to the end of the current optimizer step, where the loop
writes a checkpoint and raises `Interrupted`, so `resume=true` continues exactly from there; a second signal
stops at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A stop signal ended the command; the message says what was saved and how to resume."""


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def terminate_like_interrupt() -> None:
    """Make SIGTERM end the process like Ctrl-C does (a `KeyboardInterrupt`), so cleanup and the resume hint run.

    Only in the main thread (signal handlers cannot be installed elsewhere)."""
    if _in_main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_interrupt)


class StopRequest:
    """Set by the first stop signal while `deferred_stop` is active; `signal_name` says which one."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


@contextmanager
def deferred_stop(enabled: bool = True) -> Iterator[StopRequest]:
    """Within the block, the first SIGINT/SIGTERM only sets the returned request; a second one raises
    `KeyboardInterrupt` at once. Disabled (or outside the main thread) the request never fires."""
    request = StopRequest()
    if not enabled or not _in_main_thread():
        yield request
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if request.requested:
            raise KeyboardInterrupt(signal.Signals(signum).name)
        request.signal_name = signal.Signals(signum).name

    saved: dict[signal.Signals, Any] = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)
    try:
        yield request
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
