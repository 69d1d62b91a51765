"""Where a connection was checked out: the first stack frame that is the app's own code.

A leak report is only useful if it names the line that took the connection. At checkout
we walk up the stack past SQLAlchemy's and the exporter's frames and keep the code object
and instruction offset of the first frame outside them (two references, no string
formatting, not even a line-table lookup); the text ``path/to/file.py:42 in handler`` is
built only when someone reads it.

Async engines run the pool inside a greenlet spawned by SQLAlchemy, whose stack ends at
SQLAlchemy's ``greenlet_spawn``; the app's coroutine frames hang off the *parent*
greenlet's suspended frame, so the walk continues there.
"""

from __future__ import annotations

import os
import sys
import threading
from sys import _getframe
from types import CodeType, FrameType

import sqlalchemy

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_INTERNAL_DIRS = (
    os.path.dirname(os.path.abspath(sqlalchemy.__file__)) + os.sep,
    _PACKAGE_DIR + os.sep,
    # asyncio and greenlet plumbing between an async caller and the pool is not the site
    os.path.dirname(os.path.abspath(threading.__file__)) + os.sep + "asyncio" + os.sep,
)

# The demo's workload stands in for app code, although it ships inside the package.
_APP_FILES = (os.path.join(_PACKAGE_DIR, "cli", "demo.py"),)

# code object -> "is internal"; code objects live as long as their functions, so the
# cache stays as small as the set of call paths into the pool.
_internal: dict[CodeType, bool] = {}

try:  # greenlet is optional; without it async engines cannot run anyway
    from greenlet import getcurrent as _getcurrent
except ImportError:  # pragma: no cover - depends on the environment
    _getcurrent = None

#: (code object, byte offset of the current instruction) of the app's frame.
Site = tuple[CodeType, int]


def _is_internal(code: CodeType, frame: FrameType) -> bool:
    flag = _internal.get(code)
    if flag is None:
        name = code.co_filename
        if name.startswith("<"):
            # SQLAlchemy compiles helper wrappers: 2.1 names their file "<sqlalchemy
            # generated ...>", 2.0 "<string>", but runs them with its module's __name__.
            # Frozen modules are importlib/runpy; other "<stdin>"/"<string>" is the app's.
            module = str(frame.f_globals.get("__name__", ""))
            ours = module.startswith(("sqlalchemy.", "sqlalchemy_pool_exporter.")) and (
                module != "sqlalchemy_pool_exporter.cli.demo"
            )
            flag = name.startswith(("<sqlalchemy", "<frozen")) or ours
        else:
            path = os.path.abspath(name)
            flag = path.startswith(_INTERNAL_DIRS) and path not in _APP_FILES
        _internal[code] = flag
    return flag


def _walk(frame: FrameType | None) -> tuple[Site, int] | None:
    """First external frame from ``frame`` outwards, and how many frames were skipped."""
    internal = _internal
    depth = 0
    while frame is not None:
        code = frame.f_code
        flag = internal.get(code)
        if flag is None:
            flag = _is_internal(code, frame)
        if not flag:
            return (code, frame.f_lasti), depth
        frame = frame.f_back
        depth += 1
    return None


#: A remembered way to the app's frame: (``sys._getframe`` depth from the connect
#: wrapper, the app's code object found there by a full walk).
Known = tuple[int, CodeType]


class SiteFinder:
    """Finds checkout sites for one connect wrapper, remembering how it found them.

    Walking frame by frame creates a frame object for every SQLAlchemy frame on the way
    (9 of them under ``Session.execute``), while ``sys._getframe(n)`` creates only the one
    it returns. So the connect wrapper first looks at ``last``, the depth where the app
    was found last time, and accepts the frame there if its code is the one found there;
    only when that fails does it call :meth:`locate`, which tries the other ``recent``
    depths against ``verified`` (``id(code)`` -> :data:`Known`, keyed by id because
    hashing a code object costs ~70 ns, holding the code so the id cannot be reused),
    then walks and remembers.
    An app frame *between* SQLAlchemy frames (an event hook that checks out a connection)
    can make a remembered depth pick the hook's caller instead of the hook; both are the
    app's code.

    Every depth is 1 or more, never 0: ``sys._getframe(0)`` in the connect wrapper is the
    wrapper's own frame, and holding it in one of that frame's locals is a reference cycle
    that keeps the checked-out proxy (another local) alive until the cyclic garbage
    collector runs, so a connection the app drops without ``close()`` would not go back
    to the pool when SQLAlchemy returns it. No frame is kept past a call either: only
    code objects and offsets are.
    """

    __slots__ = ("last", "recent", "verified", "wrapper_frames")

    def __init__(self, wrapper_frames: int = 1) -> None:
        # (1, None): look at the caller first (it matches nothing, so a walk follows).
        self.last: tuple[int, CodeType | None] = (1, None)
        self.recent: list[int] = []
        self.verified: dict[int, Known] = {}
        # Frames between locate()'s caller and the app's call of pool.connect(): 1 for the
        # Python connect wrapper, 0 for the compiled one, which has no frame. Depths are
        # counted from the Python wrapper's frame either way.
        self.wrapper_frames = wrapper_frames

    def locate(self) -> Site | tuple[None, int]:
        """Site of the checkout calling the connect wrapper that calls this, or (None, 0)."""
        # 1: this method's own frame; 0 or 1: the connect wrapper's.
        shift = self.wrapper_frames
        for depth in self.recent:
            try:
                frame = _getframe(depth + shift)
            except ValueError:
                continue
            known = self.verified.get(id(frame.f_code))
            if known is not None and known[0] == depth and known[1] is frame.f_code:
                self.last = known
                return known[1], frame.f_lasti
        found = _walk(_getframe(1 + shift))  # the app's call of pool.connect()
        if found is None:
            # async: the app's frames continue in the parent greenlet
            return capture(2 + shift) or (None, 0)
        site, skipped = found
        known = (skipped + 1, site[0])
        # Shared by threads: only add, insert and truncate, which never raise mid-way.
        if len(self.verified) > 1024:
            self.verified.clear()
        self.verified[id(site[0])] = known
        if known[0] not in self.recent:
            self.recent.insert(0, known[0])
            del self.recent[4:]
        self.last = known
        return site


def capture(depth: int = 1) -> Site | None:
    """Code object and line of the first caller frame outside SQLAlchemy and the exporter."""
    found = _walk(sys._getframe(depth))
    if found is None and _getcurrent is not None:
        parent = _getcurrent().parent
        if parent is not None:
            found = _walk(parent.gr_frame)
    return found[0] if found is not None else None


def describe(site: Site | None) -> str:
    """Human text for a captured site: ``file.py:42 in func``, or ``unknown``."""
    if site is None:
        return "unknown"
    code, lasti = site
    return f"{_short_path(code.co_filename)}:{line_of(code, lasti)} in {code.co_name}"


def line_of(code: CodeType, lasti: int) -> int | str:
    """Source line of the instruction at byte offset ``lasti`` in ``code``."""
    # Reading f_lineno at checkout would decode the line table every time; the offset is
    # free to keep, and this runs only when a site is reported.
    for start, end, line in code.co_lines():
        if start <= lasti < end and line is not None:
            return line
    return code.co_firstlineno


def _short_path(path: str) -> str:
    # Relative to the working directory when inside it: shorter, and free of home paths.
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def thread_name(ident: int) -> str:
    """Name of a live thread by ident, or ``thread-<ident>`` once it has gone."""
    for t in threading.enumerate():
        if t.ident == ident:
            return t.name
    return f"thread-{ident}"
