"""Import the object an ``"package.module:attribute"`` path names (the command line's apps).

Shared by ``syncrecon worker APP`` (:func:`syncrecon.worker.load`) and ``syncrecon queue
resolve --app APP`` (:func:`syncrecon.queue.load_syncs`). Like uvicorn and celery, the current
directory is put first on ``sys.path``, so the installed ``syncrecon`` script finds
``myapp/sync.py`` exactly as ``python -m syncrecon`` does. Every failure is an
:class:`~syncrecon.AppLoadError` whose message names the path and what was wrong.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from typing import Any, Final

from ._exceptions import AppLoadError

__all__ = ["APP_PATH_FORM", "import_app", "with_cwd_on_path"]

APP_PATH_FORM: Final = "pkg.mod:attr"
"""How the command line spells an import path (in help texts and messages)."""


def with_cwd_on_path() -> None:
    """Put the current directory first on ``sys.path`` (once), as uvicorn and celery do."""
    cwd = os.getcwd()
    if not sys.path or sys.path[0] not in (cwd, ""):
        if cwd in sys.path:
            sys.path.remove(cwd)
        sys.path.insert(0, cwd)
        importlib.invalidate_caches()


def import_app(path: str, *, call: bool = True, keep: tuple[type, ...] = ()) -> Any:
    """The object ``path`` (``"package.module:attribute.attribute"``) names.

    The current directory is importable (:func:`with_cwd_on_path`). When ``call`` is true and
    the object is callable but not an instance of one of ``keep``, it is taken for a factory
    and called without arguments; its result is returned.

    :raises AppLoadError: the path is malformed, the module cannot be imported (or fails while
        it is imported), the attribute is missing, or the factory needs arguments or fails.
    """
    module_name, colon, attribute = path.partition(":")
    if not colon or not module_name.strip() or not attribute.strip():
        raise AppLoadError(
            f"cannot load {path!r}: expected 'package.module:attribute' (like myapp.sync:worker)"
        )
    with_cwd_on_path()
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppLoadError(f"cannot load {path!r}: cannot import {module_name!r}: {exc}") from exc
    except Exception as exc:
        raise AppLoadError(
            f"cannot load {path!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    found = module_name
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppLoadError(
                f"cannot load {path!r}: {found!r} has no attribute {part!r}"
            ) from None
        found = f"{module_name}:{part}" if found == module_name else f"{found}.{part}"
    if call and callable(target) and not isinstance(target, keep):
        try:
            inspect.signature(target).bind()
        except TypeError as exc:
            raise AppLoadError(
                f"cannot load {path!r}: it is a callable that needs arguments ({exc}); name an"
                " object, or a factory that takes none"
            ) from None
        except ValueError:  # no signature to inspect (some built-ins): just try it
            pass
        try:
            target = target()
        except Exception as exc:
            raise AppLoadError(
                f"cannot load {path!r}: calling it raised {type(exc).__name__}: {exc}"
            ) from exc
    return target
