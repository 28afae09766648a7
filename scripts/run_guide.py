"""Run a guide's Python examples, check their printed output, and refresh its figures.

A guide's ```python blocks run in order in one namespace, in a scratch folder. A block
followed by a ```text block must print exactly that text, except the figures marked as
timings (``12.3 s``) and errors of 1e-8 or less (rounding), which vary from run to run. Every image the guide shows from its own
folder (``![...](name.png)``) must be written by an example; it is copied next to the guide,
so the figure in the docs is the one the example draws.

Usage: python scripts/run_guide.py docs/guides/structure.md [--no-figures]
Exit status 1 when an output differs or a figure is not drawn.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

_BLOCK = re.compile(r"```(python|text)\n(.*?)```", re.S)
_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)/\s]+\.png)\)")
_TIMING = re.compile(r"\d+(?:\.\d+)? s\b")
_ROUNDING = re.compile(r"\d(?:\.\d+)?e-(?:0?[89]|[1-9]\d)\b")  # 1e-8 and below: exact up to rounding


def blocks(markdown: str) -> list[tuple[str, str | None]]:
    """``(code, expected output or None)`` for every python block, in order."""
    found = [(m.group(1), m.group(2)) for m in _BLOCK.finditer(markdown)]
    out = []
    for k, (kind, body) in enumerate(found):
        if kind == "python":
            after = found[k + 1] if k + 1 < len(found) and found[k + 1][0] == "text" else None
            out.append((body, after[1] if after else None))
    return out


def same(expected: str, got: str) -> bool:
    """Equal up to trailing spaces, timings and errors at rounding level (they differ from
    machine to machine)."""
    def norm(s: str) -> list[str]:
        return [_ROUNDING.sub("<exact>", _TIMING.sub("<t> s", line.rstrip())) for line in s.strip().splitlines()]
    return norm(expected) == norm(got)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("guide", type=Path)
    parser.add_argument("--no-figures", action="store_true", help="do not copy the figures next to the guide")
    args = parser.parse_args()
    guide = args.guide.resolve()
    text = guide.read_text(encoding="utf-8")
    ok = True
    namespace: dict = {"__name__": "__guide__"}
    with tempfile.TemporaryDirectory() as tmp:
        here = os.getcwd()
        os.chdir(tmp)
        try:
            for k, (code, expected) in enumerate(blocks(text), 1):
                buf = io.StringIO()
                t0 = time.perf_counter()
                with contextlib.redirect_stdout(buf):
                    exec(compile(code, f"{guide.name}[block {k}]", "exec"), namespace)
                got = buf.getvalue()
                print(f"--- block {k} ({time.perf_counter() - t0:.1f} s)")
                print(got, end="")
                if expected is not None and not same(expected, got):
                    ok = False
                    print(f"!!! block {k}: the guide shows\n{expected}", end="")
            for name in _IMAGE.findall(text):
                drawn = Path(tmp) / name
                if not drawn.exists():
                    ok = False
                    print(f"!!! the guide shows {name}, which no example draws")
                elif not args.no_figures:
                    shutil.copyfile(drawn, guide.parent / name)
                    print(f"figure {guide.parent / name}")
        finally:
            os.chdir(here)
    print("all outputs as shown" if ok else "OUTPUTS DIFFER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
