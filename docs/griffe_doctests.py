"""Griffe extension used by the docs build: headings for doctests and trailing prose.

tnmars docstrings often end with ``>>>`` examples without a numpy-style ``Examples``
section, or continue with a prose paragraph after their ``Parameters`` list. Left alone,
the numpy parser reads those lines as more parameters (and Markdown renders ``>>>`` as
nested quotes, ``[...]`` in an output line as a link). This extension inserts an
``Examples`` heading before the first doctest line and a ``Notes`` heading before a prose
paragraph that follows a parameter list, moves ``name: a sentence`` descriptions onto their
own line (numpy style reads text after the colon as a type), gives each name of a grouped
item (``xlabel, ylabel, logx``) its own entry (griffe would show the first name's type and
default for all of them: ``logx`` as ``str = 'parameters'``), and turns Sphinx roles into
code spans, so everything renders as written. Source files are not modified.

Registered in ``mkdocs.yml`` under ``plugins > mkdocstrings > handlers > python > options >
extensions``.
"""
from __future__ import annotations

import re
from typing import Any

import griffe

_HEADER = re.compile(r"^\s*Examples?\s*\n\s*-{3,}\s*$", re.MULTILINE)


def plain_roles(text: str) -> str:
    """Sphinx roles such as ``:class:`~tnmars.Network``` become Markdown code spans."""
    return _ROLE.sub(lambda m: "`" + (m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2)) + "`", text)


def add_examples_heading(text: str) -> str:
    """Insert ``Examples`` / ``--------`` before the first ``>>>`` line if there is no such section."""
    if ">>>" not in text or _HEADER.search(text):
        return text
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.lstrip().startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            head = [] if i == 0 or not lines[i - 1].strip() else [""]
            return "\n".join(lines[:i] + head + [f"{indent}Examples", f"{indent}--------"] + lines[i:])
    return text


_INLINE = re.compile(r"^(\s*)([\w*][\w*, ]*?)\s*:\s+(\S.*)$")
_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|obj|exc|const|term):`(~?)([^`]+)`")
_SECTIONS = {"parameters", "other parameters", "returns", "yields", "raises", "attributes", "receives", "warns"}
_PROSE = re.compile(r"[A-Za-z_(]\w*\)?\s+[A-Za-z_(]|\(")


def _is_item(line: str) -> bool:
    """Whether a line at section indent looks like ``name``, ``a, b:`` or ``name : type``."""
    head = line.strip().split(":", 1)[0]
    cleaned = re.sub(r",\s+", ",", head)  # "a, b" and "dict[str, int]" are items
    return bool(cleaned) and not _PROSE.search(cleaned.replace(" | ", "|"))


def add_notes_heading(text: str) -> str:
    """Insert ``Notes`` / ``-----`` before a prose paragraph that follows a parameter-like list."""
    lines = text.splitlines()
    out: list[str] = []
    section_indent: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if nxt.strip() and set(nxt.strip()) == {"-"} and line.strip():
            name = line.strip().lower()
            section_indent = line[: len(line) - len(line.lstrip())] if name in _SECTIONS else None
            out += [line, nxt]
            i += 2
            continue
        inline = _INLINE.match(line) if section_indent is not None else None
        if inline and inline.group(1) == section_indent and _is_item(inline.group(2) + ":") and (
            len(inline.group(3).split()) >= 4 or "`" in inline.group(3)
        ):
            # "name: a sentence" (prose, not a type): numpy style wants the text on the next line
            out += [f"{section_indent}{inline.group(2).strip()}", f"{section_indent}    {inline.group(3)}"]
            i += 1
            continue
        if (
            section_indent is not None
            and out and not out[-1].strip()
            and line.strip()
            and line[: len(line) - len(line.lstrip())] == section_indent
            and not line.lstrip().startswith(">>>")
            and not _is_item(line)
        ):
            out += [f"{section_indent}Notes", f"{section_indent}-----"]
            section_indent = None
        out.append(line)
        i += 1
    return "\n".join(out)


def split_grouped_parameters(text: str) -> str:
    """Give each name of a grouped parameter item (``a, b : int`` or ``a, b``) its own item
    with the shared description, so each shows its own type and default from the signature."""
    lines = text.splitlines()
    out: list[str] = []
    section_indent: str | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if nxt.strip() and set(nxt.strip()) == {"-"} and line.strip():
            name = line.strip().lower()
            section_indent = line[: len(line) - len(line.lstrip())] if name in _SECTIONS else None
            out += [line, nxt]
            i += 2
            continue
        indent = line[: len(line) - len(line.lstrip())]
        head, _, kind = line.strip().partition(" : ")
        head = head.rstrip(":")
        if section_indent is not None and indent == section_indent and ", " in head and _is_item(line):
            body = []
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > len(indent)):
                body.append(lines[j])
                j += 1
            while body and not body[-1].strip():  # the blank lines after the item stay where they were
                body.pop()
                j -= 1
            for name in (n.strip() for n in head.split(",")):
                out.append(f"{indent}{name}" + (f" : {kind}" if kind else ""))
                out += body
            i = j
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


class DoctestExamples(griffe.Extension):
    """Apply :func:`add_examples_heading` to every docstring griffe loads."""

    def _fix(self, obj: Any) -> None:
        doc = getattr(obj, "docstring", None)
        if doc is not None and doc.value:
            doc.value = plain_roles(add_examples_heading(split_grouped_parameters(add_notes_heading(doc.value))))

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        self._fix(obj)
