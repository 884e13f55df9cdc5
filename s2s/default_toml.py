"""Render every setting with its default as commented TOML: the text of ``configs/default.toml``.

    python -m s2s.default_toml > configs/default.toml

The comments are the dataclasses' docstrings (read from the source of ``s2s/config.py``), so the file stays
equal to the defaults after a field is added (``tests/test_config.py`` checks that it does).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import textwrap

from s2s import config as config_module
from s2s.config import Config

HEADER = """\
# Every setting with its default value. Generated from s2s/config.py by `python -m s2s.default_toml`;
# tests/test_config.py checks that it matches. Copy a section into your own file and pass it with --config,
# or override one key with --set section.key=value.
"""


def field_docs() -> dict[tuple[str, str], str]:
    """(class name, field name) -> the string literal written under the field."""
    docs = {}
    for node in ast.parse(inspect.getsource(config_module)).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for field, after in zip(node.body, node.body[1:], strict=False):
            if (isinstance(field, ast.AnnAssign) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs[(node.name, field.target.id)] = " ".join(after.value.value.split())
    return docs


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    return repr(value)


def render(config: Config | None = None) -> str:
    """The TOML text of ``config`` (default: the defaults), one commented key per line."""
    config = config or Config()
    docs = field_docs()
    lines = [HEADER]
    for section in dataclasses.fields(config):
        values = getattr(config, section.name)
        cls = type(values)
        lines.append(f"[{section.name}]")
        lines.append(f"# {(cls.__doc__ or '').strip().splitlines()[0]}")
        for field in dataclasses.fields(values):
            doc = docs.get((cls.__name__, field.name))
            if doc:
                lines += [f"#   {line}" for line in textwrap.wrap(doc, 108)]
            lines.append(f"{field.name} = {_toml_value(getattr(values, field.name))}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
