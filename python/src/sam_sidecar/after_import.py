"""Run a function on a module right after the engine itself imports it.

The plugin must not import vLLM-Ascend's model runner on its own: that import runs vLLM-Ascend's
worker patches early and in every process (the API server too). Instead it waits for the engine to
import the runner, in the process that runs it, and patches the class then.
"""
from __future__ import annotations

import importlib.abc
import sys
import threading
from typing import Callable, Dict, List

_lock = threading.Lock()
_pending: Dict[str, List[Callable]] = {}


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _pending:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_call(module):
            exec_module(module)
            _run(fullname, module)

        loader.exec_module = exec_then_call
        return spec


_finder = _Finder()


def _run(name: str, module) -> None:
    with _lock:
        callbacks = _pending.pop(name, [])
    for callback in callbacks:
        callback(module)


def when_imported(name: str, callback: Callable) -> None:
    """Calls `callback(module)` once module `name` has executed: now, if it already has."""
    module = sys.modules.get(name)
    if module is not None:
        callback(module)
        return
    with _lock:
        _pending.setdefault(name, []).append(callback)
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
