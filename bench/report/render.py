"""summary.md and report.html from one report model (sections.py), each through a Jinja2
template in templates/. Markdown names the figures' files; HTML embeds them as base64 PNG so the
page stays one self-contained file."""

from __future__ import annotations

import base64
import html
import math
import re
from functools import cache
from pathlib import Path

import jinja2
import pandas as pd
from markupsafe import Markup
from tabulate import tabulate

from . import sections
from .sections import Report, Table

TEMPLATES = Path(__file__).parent / "templates"


def markdown_table(t: Table) -> str:
    if not len(t.frame):
        return t.empty
    # text stays as written (a p-value given as "0.0003" must not be re-read as a float and
    # shown as 0.000); numbers get floatfmt
    text = [i for i, c in enumerate(t.frame.columns) if pd.api.types.is_string_dtype(t.frame[c])]
    return tabulate(t.frame, headers="keys", tablefmt="github", floatfmt=t.floatfmt,
                    showindex=False, disable_numparse=text or False)


def _cell(v, floatfmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):  # numpy floats are floats too
        return format(v, floatfmt)
    return str(v)


def html_rows(t: Table) -> list[list[str]]:
    return [[_cell(v, t.floatfmt) for v in row] for row in t.frame.itertuples(index=False)]


def inline(text: str) -> Markup:
    """The markdown the model's sentences use (`code`, **bold**) as HTML, the rest escaped."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return Markup(re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out))


def png_data(path: Path) -> str | None:
    return base64.b64encode(path.read_bytes()).decode("ascii") if path.exists() else None


@cache
def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html.j2"]),
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters.update(markdown_table=markdown_table, html_rows=html_rows, inline=inline,
                       png_data=png_data)
    return env


def markdown(doc: Report) -> str:
    # each block ends in a blank line; the file ends in exactly one newline
    return _env().get_template("summary.md.j2").render(doc=doc).rstrip("\n") + "\n"


def html_page(doc: Report) -> str:
    return _env().get_template("report.html.j2").render(doc=doc)


def write(run_dir: Path, doc: Report) -> None:
    (run_dir / "summary.md").write_text(markdown(doc))
    (run_dir / "report.html").write_text(html_page(doc))


def summary_markdown(manifest: dict, cells: pd.DataFrame, table1: pd.DataFrame,
                     pareto: pd.DataFrame, pairs: pd.DataFrame | None = None,
                     contexts: pd.DataFrame | None = None) -> str:
    """summary.md's text from a manifest and the run's tables."""
    return markdown(sections.build(manifest, cells, table1, pareto, pairs, contexts))
