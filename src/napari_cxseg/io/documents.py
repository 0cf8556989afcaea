"""Small JSON and YAML documents (MSD ``dataset.json``, label sidecars, model cards, bundle
metadata) read safely: regular files only, of bounded size, UTF-8, and bounded nesting.

A document named by a user's file may be anything: a link to ``/dev/zero`` (never ends), a pipe
(blocks), a 10 GB file, bytes that are not UTF-8, ``[`` nested a hundred thousand deep (Python's
``json`` and PyYAML recurse, and fail with ``RecursionError`` after seconds), or YAML aliases that
multiply. Every refusal is a :class:`~napari_cxseg.images.CxsegError` that names the file.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from ..images import CxsegError

#: Deepest nesting of brackets (or, in YAML, indentation levels) a document may have.
MAX_DEPTH = 100
#: Widest indentation of a YAML line (a rough bound on block nesting).
MAX_INDENT = 400


def read_text(path: str | os.PathLike, limit: int, what: str) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes.

    Parameters
    ----------
    path
        The file.
    limit
        Largest size in bytes.
    what
        What the file should be, for messages (``"a model card"``).

    Returns
    -------
    str

    Raises
    ------
    CxsegError
        Not a regular file (a device, pipe, folder), unreadable, larger than ``limit``, or not
        UTF-8; the message names the file.
    """
    from .limits import human

    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a pipe must not block
    except OSError as e:
        raise CxsegError(f"cannot read {p} ({what}): {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise CxsegError(f"cannot read {p} ({what}): it is not a regular file")
        if st.st_size > limit:
            raise CxsegError(f"cannot read {p}: it is {human(st.st_size)}, too large for {what} "
                             f"(at most {human(limit)})")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise CxsegError(f"cannot read {p}: it is larger than {what} may be ({human(limit)})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CxsegError(f"cannot read {p} ({what}): it is not UTF-8 text ({e})") from None


def nesting_problem(text: str, yaml: bool = False) -> str | None:
    """Why ``text`` nests deeper than :data:`MAX_DEPTH` (brackets; YAML indentation too), or
    ``None``. Brackets inside quotes count as well: a real document never comes close."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    if deepest > MAX_DEPTH:
        return f"its brackets nest {deepest} deep (at most {MAX_DEPTH})"
    if yaml:
        indent = max((len(line) - len(line.lstrip(" ")) for line in text.splitlines()), default=0)
        if indent > MAX_INDENT:
            return f"a line is indented {indent} columns (at most {MAX_INDENT})"
    return None


def parse_json(text: str, path: str | os.PathLike, what: str, **kwargs: Any) -> Any:
    """``json.loads`` with nesting bounded; errors name the file.

    Raises
    ------
    CxsegError
        Invalid JSON, or nested too deeply.
    """
    problem = nesting_problem(text)
    if problem:
        raise CxsegError(f"cannot read {path} ({what}): {problem}")
    try:
        return json.loads(text, **kwargs)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise CxsegError(f"cannot read {path}: it is not valid JSON ({what}): {e}") from None


def load_json(path: str | os.PathLike, limit: int, what: str, **kwargs: Any) -> Any:
    """:func:`read_text` then :func:`parse_json`."""
    return parse_json(read_text(path, limit, what), path, what, **kwargs)


def parse_yaml(text: str, path: str | os.PathLike, what: str, loader: Any = None) -> Any:
    """YAML (the safe loader, libyaml's when there, unless ``loader`` is given) with nesting
    bounded; errors name the file.

    Raises
    ------
    CxsegError
        Invalid YAML (several documents, unknown tags ...), or nested too deeply.
    """
    import yaml

    problem = nesting_problem(text, yaml=True)
    if problem:
        raise CxsegError(f"cannot read {path} ({what}): {problem}")
    safe = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, when built: ten times faster
    try:
        return yaml.load(text, Loader=loader or safe)  # noqa: S506 - a safe loader
    except (yaml.YAMLError, RecursionError, ValueError) as e:
        raise CxsegError(f"{what} {path} is not valid YAML: {e}") from None
