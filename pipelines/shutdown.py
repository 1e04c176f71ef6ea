"""Release, at interpreter exit, the objects Dagster keeps from the frames that first built its
records, so that DuckDB's binding does not print "nanobind: leaked instances" when a process
that ran the pipeline ends (about 40 lines after every ``make demo``).

Why: Dagster's record classes (``AssetCheckSpec``, ``TableColumn``, ``AssetSpec``...) compile
their checked ``__new__`` on first use (``dagster_shared.record.JitCheckedNew``), in a namespace
that copies the *calling frame's* globals and locals, to resolve forward references. That
namespace is a plain dict living as long as the class, that is until the end of finalization,
and Python does not wipe it the way it wipes module dicts. Whatever the first caller had in
reach stays reachable: tagrec's asset functions and specs, the job being built, and through
them DuckDB's modules, which then outlive the point where they are normally torn down; nanobind
(DuckDB 2.0's binding) reports DuckDB's still-alive objects (the 27 ``DuckDBPyType`` constants,
their type and methods, ``ExplainType``) at exit.

The compiled ``__new__`` only looks up, in that namespace, its defining module's names, the
injected ``__*__`` entries and the types its checks name (classes, typing constructs). The
release drops every other captured entry (the callers' plain values: lists, functions, asset
definitions, tagrec's and DuckDB's objects), so records still construct and check the same way,
even in an exit handler that runs later. Measured: a process that loads the definitions,
materialises the openclipart fixture up to a model and prints the demo summary printed 35
"leaked" lines at exit before, none after; the release takes about 15 ms.
"""

from __future__ import annotations

import atexit
import sys
import types
from typing import Iterator

CHECKED_NEW = "__checked_new__"  # dagster_shared.record's name for the compiled __new__
# Packages whose classes a Dagster check never names: their classes go too.
PROJECT_PACKAGES = ("assets", "pipelines", "tagrec_models", "duckdb", "_duckdb")
TYPING_MODULES = ("typing", "typing_extensions", "types")


def _package(value: object) -> str:
    module = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
    return module.split(".")[0] if isinstance(module, str) else ""


def compiled_record_constructors() -> Iterator[types.FunctionType]:
    """Every checked ``__new__`` Dagster has compiled so far (records are ``NamedTuple``
    subclasses, so a walk down ``tuple``'s subclasses finds them all)."""
    stack, seen = list(tuple.__subclasses__()), set()
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        try:
            stack.extend(cls.__subclasses__())
        except TypeError:  # ``type`` as a subclass entry needs an argument
            pass
        for value in list(vars(cls).values()):
            function = value.__func__ if isinstance(value, staticmethod) else value
            if isinstance(function, types.FunctionType) and function.__name__ == CHECKED_NEW:
                yield function


def _needed(name: str, value: object, own: dict) -> bool:
    """Whether a compiled ``__new__`` may look ``name`` up: its module's own names, injected
    entries, and types (classes outside the project, typing constructs, such modules)."""
    if name.startswith("__") or own.get(name, own) is value:
        return True
    if isinstance(value, (type, types.ModuleType)):
        return _package(value) not in PROJECT_PACKAGES
    return type(value).__module__ in TYPING_MODULES


def release_captured_frames() -> int:
    """Drop the captured callers' entries from the namespaces of Dagster's compiled record
    constructors (never touching a module's own dict); returns how many entries went."""
    released = 0
    for function in compiled_record_constructors():
        namespace = function.__globals__
        home = sys.modules.get(namespace.get("__name__", ""))
        own = vars(home) if home is not None else {}
        if own is namespace:
            continue  # a module's own globals: Python wipes those itself
        for name in [n for n, v in namespace.items() if not _needed(n, v, own)]:
            del namespace[name]
            released += 1
    return released


_registered = False


def register() -> None:
    """Run ``release_captured_frames`` at interpreter exit (once per process)."""
    global _registered
    if not _registered:
        atexit.register(release_captured_frames)
        _registered = True
