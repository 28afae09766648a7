"""The documentation site builds in strict mode, shows the API, the CLI help and the results."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")
pytest.importorskip("material")

ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True, text=True, cwd=config.parent, env=ENV, timeout=600,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    proc = _build(ROOT / "mkdocs.yml", out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def _page(site: Path, path: str) -> str:
    return (site / path / "index.html").read_text(encoding="utf-8")


def test_api_reference_renders_the_code(site):
    html = _page(site, "api/network")
    for name in ("Network", "prune", "from_tensorly", "to_tensorly", "mask_site"):
        assert name in html
    assert "save" in _page(site, "api/io") and "FileFormatError" in _page(site, "api/io")
    assert "plot_mask_probabilities" in _page(site, "api/plots")
    assert "to_tensorly" in _page(site, "api/interop")


def test_cli_page_shows_the_current_help(site):
    html = _page(site, "cli")
    assert "tnmars-help" not in html  # every marker was replaced
    for option in ("--max-rank", "--observed", "--format", "--plot", "--json"):
        assert option in html


def test_every_results_file_has_a_page(site):
    results = sorted((ROOT / "benchmarks" / "results").glob("*.md"))
    index = _page(site, "results")
    for path in results:
        page = site / "results" / path.stem / "index.html"
        assert page.exists(), f"no page for {path.name}"
        assert path.name in index


def test_strict_build_fails_on_a_broken_reference(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# x\n\n::: tnmars.no_such_module\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(textwrap.dedent(f"""\
        site_name: broken
        plugins:
          - mkdocstrings:
              handlers:
                python:
                  paths: [{ROOT}]
        """))
    proc = _build(config, tmp_path / "site")
    assert proc.returncode != 0
    (tmp_path / "docs" / "index.md").write_text("# x\n\n[missing](nowhere.md)\n")
    proc = _build(config, tmp_path / "site")
    assert proc.returncode != 0 and "nowhere.md" in proc.stdout + proc.stderr


def test_results_links_are_rewritten_not_broken():
    hook = _load("gen_results")
    text = "see [the script](../contraction.py), ![plot](fig.png), ![gone](x.png), [web](https://a.b) and [t](t.md#s)"
    out = hook.rewrite_links(text, {"fig.png", "t.md"})
    assert "the script (`../contraction.py`)" in out
    assert "![plot](fig.png)" in out
    assert "[web](https://a.b)" in out and "[t](t.md#s)" in out
    assert "x.png" in out and "![gone]" not in out
    assert "No benchmark results" in hook.index_markdown([])
    table = "| ranks [conv2 r1,r2] [fc1 r3] | [a](b.md) | `[code]` |\n```\n[x][y]\n```\n"
    assert hook.escape_brackets(table) == (
        "| ranks \\[conv2 r1,r2] \\[fc1 r3] | [a](b.md) | `[code]` |\n```\n[x][y]\n```\n"
    )


def test_docstring_headings_extension():
    ext = _load("griffe_doctests")
    doc = "Summary.\n\nParameters\n----------\nx:\n    The x.\n\nCall it with care: really.\n\n>>> f(1)\n2"
    fixed = ext.add_examples_heading(ext.add_notes_heading(doc))
    assert "x:\n    The x.\n\nNotes\n-----\nCall it with care" in fixed
    assert "Examples\n--------\n>>> f(1)" in fixed
    inline = ext.add_notes_heading("Parameters\n----------\nsteps, lr: Adam steps and the rate.\nx : int\n    X.")
    assert inline == "Parameters\n----------\nsteps, lr\n    Adam steps and the rate.\nx : int\n    X."
    assert ext.plain_roles("see :class:`~tnmars.Network` and :func:`tnmars.fit`") == "see `Network` and `tnmars.fit`"
    untouched = "Summary.\n\nParameters\n----------\na, b : int\n    Sizes.\n\nExamples\n--------\n>>> 1\n1"
    assert ext.add_examples_heading(ext.add_notes_heading(untouched)) == untouched


def _pages(site: Path) -> dict[str, str]:
    return {str(p.relative_to(site)): p.read_text(encoding="utf-8") for p in site.rglob("*.html")}


def test_maths_is_rendered_at_build_time_and_needs_no_network(site):
    """Maths came from a CDN and showed raw LaTeX offline; now it is MathML in the page."""
    pages = _pages(site)
    assert "<math" in pages["mars/index.html"]
    for name, html in pages.items():
        assert "cdn.jsdelivr" not in html and "mathjax" not in html.lower(), name
        assert 'class="arithmatex"' not in html, name  # every formula was converted
    hook = _load("offline_math")
    assert hook.render('<span class="arithmatex">\\(\\frac{1}{N}\\)</span>').startswith("<math")
    for bad in ("\\foo{x}", "{"):
        with pytest.raises(ValueError, match="cannot render"):
            hook.render(f'<span class="arithmatex">\\({bad}\\)</span>', "x.md")


def test_navigation_and_titles_are_for_readers(site):
    """No internal labels ("(issue 3)"), no two pages with one title, no DESIGN.md."""
    import re

    pages = _pages(site)
    titles = {}
    for name, html in pages.items():
        if name in ("404.html",):
            continue
        title = re.search(r"<title>(.*?)</title>", html, re.S).group(1)
        titles.setdefault(title, []).append(name)
        labels = re.findall(r'class="md-ellipsis">\s*([^<]*?)\s*</span>', html)
        assert not [t for t in labels if re.search(r"\(issue \d", t)], (name, labels)
        assert "DESIGN.md" not in html, name  # an internal document, not part of the project
    duplicates = {t: n for t, n in titles.items() if len(n) > 1}
    assert not duplicates, duplicates


def test_api_reference_shows_each_parameters_own_type_and_default(site):
    """Grouped docstring items (``xlabel, ylabel, logx``) showed the first one's type and
    default for all: ``logx`` as ``str = 'parameters'``, ``pi`` as ``bool = True``."""
    import html as html_lib
    import re

    def row(page: str, name: str) -> str:
        text = _page(site, page)
        for r in re.findall(r"<tr[^>]*>(.*?)</tr>", text, re.S):
            cells = " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", r)).split())
            if cells.startswith(name + " "):
                return cells
        raise AssertionError(f"no parameter row {name!r} on {page}")

    assert row("api/plots", "logx").startswith("logx bool | None") and row("api/plots", "logx").endswith("None")
    assert row("api/network", "scale").startswith("scale float") and row("api/network", "scale").endswith("1.0")
    assert row("api/nn-layers", "pi").startswith("pi float") and row("api/nn-layers", "pi").endswith("0.01")
    ext = _load("griffe_doctests")
    doc = "Parameters\n----------\na, b : int\n    Sizes.\nc\n    C."
    assert ext.split_grouped_parameters(doc) == "Parameters\n----------\na : int\n    Sizes.\nb : int\n    Sizes.\nc\n    C."


def test_results_titles_are_cleaned_and_unique(tmp_path):
    hook = _load("gen_results")
    assert hook.clean_title("Full-tensor reconstruction (issue 2 benchmark)") == "Full-tensor reconstruction"
    assert hook.clean_title("Rank recovery (issue 3): summary") == "Rank recovery: summary"
    pages = []
    for name, head in [("a_one.md", "# Experiment 4: speed"), ("a_two.md", "# Experiment 4: speed"), ("b.md", "# B")]:
        (tmp_path / name).write_text(head + "\n\ntext\n")
        pages.append(tmp_path / name)
    assert list(hook.titles(pages).values()) == ["Experiment 4: speed (a_one)", "Experiment 4: speed (a_two)", "B"]
