"""Clips done so far by a long library call, reported to whoever asked (the app's first-start progress bars).

Why a context variable rather than a parameter: scoring a data folder goes ``System.score_into`` ->
``System.score`` -> the frontend's clip loop, through every system; a callback parameter would have
to be threaded through each signature. The loops that read clips call :func:`advance` instead, which
costs nothing when nobody listens. A context variable is per thread (a new thread starts without a
listener), so jobs running side by side each report to their own bar.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Callable, Iterator

_LISTENER: ContextVar[Callable[[int], None] | None] = ContextVar("asdcore_clip_progress", default=None)


@contextlib.contextmanager
def listening(on_clips: Callable[[int], None]) -> Iterator[None]:
    """Within the block, every :func:`advance` of this thread calls ``on_clips(n)``."""
    token = _LISTENER.set(on_clips)
    try:
        yield
    finally:
        _LISTENER.reset(token)


def advance(n: int = 1) -> None:
    """``n`` more clips done (read, embedded or scored); a no-op without a listener."""
    listener = _LISTENER.get()
    if listener is not None and n:
        listener(int(n))
