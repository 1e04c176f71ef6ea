"""The description of every field of a model's ``Config``, read from where the code documents
it, so the launchpad shows the same words as the source.

A field is documented in one of three ways (all are used in this package):

* an attribute docstring, the string literal right under the field;
* a bullet ````field``: text`` in the docstring of the config class (or of a base class);
* a definition line ``field: text`` in that docstring, continued by more-indented lines.

The nearest class in the MRO that documents a field wins.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
from functools import cache

_BULLET = re.compile(r"^\s*\*\s+``(\w+)``\s*:\s*(.+?)(?=^\s*\*\s+``|^\s*$|\Z)", re.M | re.S)
_DEFINITION = re.compile(r"^(\w+): (.+(?:\n[ \t]+\S.*)*)", re.M)


def _squash(text: str) -> str:
    return " ".join(text.split())


def _attribute_docstrings(cls: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    tree = ast.parse(source)
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    found: dict[str, str] = {}
    for statement, following in zip(body, body[1:]):
        if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            found[statement.target.id] = _squash(following.value.value)
    return found


def _bullets(cls: type) -> dict[str, str]:
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    found = {name: _squash(text) for name, text in _DEFINITION.findall(doc)}
    found.update({name: _squash(text) for name, text in _BULLET.findall(doc)})
    return found


@cache
def field_descriptions(config_cls: type) -> dict[str, str]:
    """Field name -> description for every documented field of the dataclass ``config_cls``."""
    described: dict[str, str] = {}
    for cls in config_cls.__mro__:
        if not dataclasses.is_dataclass(cls):
            continue
        for source in (_attribute_docstrings(cls), _bullets(cls)):
            for name, text in source.items():
                described.setdefault(name, text)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    return {name: text for name, text in described.items() if name in fields}


def undocumented_fields(config_cls: type) -> list[str]:
    described = field_descriptions(config_cls)
    return [f.name for f in dataclasses.fields(config_cls) if f.name not in described]
