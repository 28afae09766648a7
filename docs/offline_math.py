"""MkDocs hook: maths rendered to MathML when the site is built, so it shows offline.

``pymdownx.arithmatex`` (generic mode) leaves ``\\(...\\)`` and ``\\[...\\]`` in the HTML for a
script to typeset in the browser; loaded from a CDN, that script fails offline and readers
see raw LaTeX. This hook converts each formula to MathML with ``latex2mathml`` (pure Python)
at build time; browsers draw MathML natively, so the site needs no script and no network.
A formula that does not convert (or uses a command the converter does not know) fails the
build, naming the page.

Registered in ``mkdocs.yml`` under ``hooks:``.
"""
from __future__ import annotations

import html
import re

_INLINE = re.compile(r'<span class="arithmatex">\s*\\\((.*?)\\\)\s*</span>', re.S)
_BLOCK = re.compile(r'<div class="arithmatex">\s*\\\[(.*?)\\\]\s*</div>', re.S)


def to_mathml(tex: str, display: bool) -> str:
    """One formula (HTML-escaped LaTeX, as arithmatex writes it) as a MathML element."""
    from latex2mathml.converter import convert

    out = convert(html.unescape(tex).strip(), display="block" if display else "inline")
    unknown = re.findall(r"\\[A-Za-z]+", out)
    if unknown:  # latex2mathml passes commands it does not know through as text
        raise ValueError(f"unknown LaTeX command {unknown[0]}")
    return out


def render(content: str, where: str = "a page") -> str:
    """Every arithmatex formula of ``content`` replaced by MathML."""

    def sub(display: bool):
        def fix(match: re.Match) -> str:
            try:
                return to_mathml(match.group(1), display)
            except Exception as err:  # latex2mathml raises its own exception types
                raise ValueError(f"cannot render the formula {match.group(1)!r} in {where}: {err}") from err

        return fix

    return _INLINE.sub(sub(False), _BLOCK.sub(sub(True), content))


def on_page_content(html_text, page, config, files):
    return render(html_text, page.file.src_path)
