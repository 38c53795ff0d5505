"""A test that leaves one of kvdicom's module-level settings changed fails, naming it.

Why: tests force kvdicom's paths by setting its module constants (``headers.POOL_MIN_FILES = 1`` puts every
series on the header workers). A session-scoped fixture of ``bench/test_fuzz.py`` did that and put the values back
only at the session's end, so every later test's series went through the workers, which read each slice's pixels
right after its header: a test of a file rewritten between the header and the pixel read then passed or failed
by the order the tests ran in. Checked after each test's own teardown (``monkeypatch`` has put its values back),
against the values at the start of the session: the upper-case constants of every kvdicom internal module
(all imported then) that hold a number, a string, a bool, None or a tuple (a constant a test sets).
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import sys

import pytest

_SNAPSHOT = pytest.StashKey[dict]()
_PLAIN = (int, float, str, bool, tuple, type(None))


def _constants() -> dict[tuple[str, str], object]:
    found = {}
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "kvdicom" or name.startswith("kvdicom.")):
            continue
        for attr, value in list(vars(module).items()):
            if attr.isupper() and not attr.startswith("_") and isinstance(value, _PLAIN):
                found[(name, attr)] = value
    return found


def _import_internals() -> None:
    """Every kvdicom internal module (``kvdicom._*``), so that the snapshot holds all their constants, not only
    those of the modules imported by the session's start (19 of them); not the optional integrations."""
    import kvdicom

    for info in pkgutil.walk_packages(kvdicom.__path__, "kvdicom."):
        if info.name.split(".")[1].startswith("_"):
            with contextlib.suppress(Exception):  # a module that cannot import here is left to its tests
                importlib.import_module(info.name)


def pytest_sessionstart(session):
    _import_internals()
    session.config.stash[_SNAPSHOT] = _constants()


def changed(before: dict) -> list[tuple[str, str, object]]:
    """``(module, NAME, value now)`` of each constant of ``before`` whose value is not what it was: looked up where
    it lives, so a constant set to anything (a stand-in object too) is seen, without walking every module."""
    left = []
    for (module, attr), value in before.items():
        now = getattr(sys.modules.get(module), attr, value)
        if now is not value and now != value:
            left.append((module, attr, now))
    return left


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    result = yield  # every fixture torn down: monkeypatch has put its values back
    before = item.config.stash.get(_SNAPSHOT, None)
    if before is None:
        return result
    left = changed(before)
    if left:
        for module, attr, _ in left:  # put back, so the tests after this one run as they should
            setattr(sys.modules[module], attr, before[(module, attr)])
        listing = "; ".join(f"{module}.{attr}: {before[(module, attr)]!r} -> {now!r}" for module, attr, now in left)
        raise AssertionError(f"{item.nodeid} left kvdicom's settings changed (put back now; restore them in the "
                             f"test or its fixture, e.g. with monkeypatch): {listing}")
    return result
