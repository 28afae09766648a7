"""MkDocs hook: publish ``benchmarks/results/`` and the CLI's ``--help`` text in the site.

Nothing is copied by hand, so the documentation cannot drift from the measured results:

* every ``benchmarks/results/*.md`` becomes a page ``results/<name>/`` (with the PNGs
  next to it), listed on a generated ``results/index.md`` and in the navigation;
* links in those files that point outside the published set (say to a benchmark script)
  are turned into code spans instead of broken links, and brackets used as plain text are
  escaped, so ``mkdocs build --strict`` passes;
* a line ``<!-- tnmars-help: fit -->`` in any page is replaced by the current output of
  ``tnmars fit --help`` (likewise ``demo``, ``info``, or ``main`` for ``tnmars --help``).

Registered in ``mkdocs.yml`` under ``hooks:``. Run ``python docs/gen_results.py`` to print
the list of result pages it would publish.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PREFIX = "results"
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)(\s+\"[^\"]*\")?\)")
_LONE_BRACKET = re.compile(r"(?<![\\!])\[(?![^\]]*\]\()")
_HELP = re.compile(r"^<!--\s*tnmars-help:\s*([\w-]+)\s*-->\s*$", re.MULTILINE)


def result_files() -> tuple[list[Path], list[Path]]:
    """The markdown results and the other files (images, CSVs) to publish, sorted by name."""
    if not RESULTS.is_dir():
        return [], []
    pages = sorted(p for p in RESULTS.glob("*.md") if p.is_file())
    assets = sorted(p for p in RESULTS.iterdir() if p.is_file() and p.suffix.lower() in (".png", ".svg", ".csv", ".json"))
    return pages, assets


_ISSUE_LABEL = re.compile(r"\s*\((?:[^()]*\s)?issue \d+[^()]*\)", re.IGNORECASE)


def _raw_title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return path.stem.replace("_", " ")


def clean_title(title: str) -> str:
    """A heading without the project's internal labels ("(issue 3)", "(issue 2 benchmark)")."""
    return _ISSUE_LABEL.sub("", title).strip()


def titles(pages: list[Path]) -> dict[Path, str]:
    """The title of every results page: its first heading, cleaned, made unique by the file
    name where several pages share one (three runs of one experiment, say)."""
    cleaned = {p: clean_title(_raw_title(p)) for p in pages}
    counts: dict[str, int] = {}
    for t in cleaned.values():
        counts[t] = counts.get(t, 0) + 1
    return {p: (f"{t} ({p.stem})" if counts[t] > 1 else t) for p, t in cleaned.items()}


def _title(path: Path) -> str:
    return titles(result_files()[0]).get(path) or clean_title(_raw_title(path))


def rewrite_links(text: str, published: set[str]) -> str:
    """Keep links to published files and web addresses; turn the rest into code spans."""

    def fix(match: re.Match) -> str:
        bang, label, target, title = match.group(1), match.group(2), match.group(3), match.group(4) or ""
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            return match.group(0)
        name = target.split("#", 1)[0]
        if name in published:
            return f"{bang}[{label}]({target}{title})"
        if bang:
            return f"*(image `{target}` is not in benchmarks/results/)*"
        return f"{label} (`{target}`)" if label and label != target else f"`{target}`"

    return _LINK.sub(fix, text)


def escape_brackets(text: str) -> str:
    """Escape ``[`` that does not open an inline link, outside code.

    Results tables use brackets as plain text (``[conv2 r1,r2] [fc1 r3]``), which Markdown
    would read as reference links and the strict build would reject as unknown targets.
    """
    out, fenced = [], False
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            out.append(line)
            continue
        if fenced or line.startswith("    "):
            out.append(line)
            continue
        parts = line.split("`")
        for k in range(0, len(parts), 2):  # even parts are outside inline code
            parts[k] = _LONE_BRACKET.sub(r"\\[", parts[k])
        out.append("`".join(parts))
    return "".join(out)


def index_markdown(pages: list[Path]) -> str:
    lines = [
        "# Benchmark results",
        "",
        "Every page below is generated at build time from a file in `benchmarks/results/`, which",
        "the script of the same name in `benchmarks/` wrote. Each starts with the exact command",
        "that produced it, the date and the machine. Timings were measured on a shared 2-core CPU",
        "unless a page says otherwise, so they are noisy; compare figures within one table only.",
        "",
    ]
    if not pages:
        lines.append("No benchmark results have been recorded yet.")
    else:
        lines += ["| page | source file |", "|---|---|"]
        named = titles(pages)
        lines += [f"| [{named[p]}]({p.name}) | `benchmarks/results/{p.name}` |" for p in pages]
    return "\n".join(lines) + "\n"


def cli_help(command: str) -> str:
    """The ``--help`` text of ``tnmars`` (``command="main"``) or of one of its commands."""
    from tnmars.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        parser = build_parser()
        if command == "main":
            text = parser.format_help()
        else:
            sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
            if command not in sub.choices:
                raise ValueError(f"tnmars has no command {command!r} (in a tnmars-help marker)")
            text = sub.choices[command].format_help()
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return "```text\n" + text.rstrip() + "\n```"


# ------------------------------------------------------------------------ mkdocs events
def on_config(config):
    """Expand the ``results/index.md`` navigation entry into one entry per results page."""
    pages, _ = result_files()

    def expand(items):
        out = []
        for item in items:
            if isinstance(item, dict):
                ((title, value),) = item.items()
                if value == f"{PREFIX}/index.md":
                    named = titles(pages)
                    section = [{"Overview": value}] + [{named[p]: f"{PREFIX}/{p.name}"} for p in pages]
                    out.append({title: section})
                elif isinstance(value, list):
                    out.append({title: expand(value)})
                else:
                    out.append(item)
            else:
                out.append(item)
        return out

    if config.get("nav"):
        config["nav"] = expand(config["nav"])
    if RESULTS.is_dir():
        config.watch.append(str(RESULTS))
    return config


def on_files(files, config):
    from mkdocs.structure.files import File

    pages, assets = result_files()
    published = {p.name for p in pages} | {a.name for a in assets}
    files.append(File.generated(config, f"{PREFIX}/index.md", content=index_markdown(pages)))
    named = titles(pages)
    for page in pages:
        text = escape_brackets(rewrite_links(page.read_text(encoding="utf-8"), published))
        body = text.lstrip()
        if body.startswith("# "):  # the page's own heading, as the navigation shows it
            body = body.split("\n", 1)[1] if "\n" in body else ""
        text = f"# {named[page]}\n\n" + body
        files.append(File.generated(config, f"{PREFIX}/{page.name}", content=text))
    for asset in assets:
        files.append(File.generated(config, f"{PREFIX}/{asset.name}", abs_src_path=str(asset)))
    return files


def on_page_markdown(markdown, page, config, files):
    return _HELP.sub(lambda m: cli_help(m.group(1)), markdown)


if __name__ == "__main__":
    found, extra = result_files()
    for p in found:
        print(f"{PREFIX}/{p.name}: {_title(p)}")
    for a in extra:
        print(f"{PREFIX}/{a.name}")
