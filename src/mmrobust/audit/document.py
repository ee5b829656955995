"""A minimal report document (headings, paragraphs, tables, figures) and its two writers.

The comparison report is built once as a list of blocks and written either as ONE
self-contained HTML file (inline CSS, figures as base64 data URIs, a Content-Security-Policy
that forbids any request, so a stray external reference fails visibly in a browser instead of
leaking) or as Markdown with the figures as PNG files beside it.

Inline markup in paragraphs and cells: `code` and **bold**, the subset both formats share.

Example:
    write_document("Report", [Heading("Results"), Paragraph("**bold** and `code`")], Path("r.html"))
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..atomic import atomic_write


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, column) cells to emphasise
    collapsed: str = ""  # non-empty: in HTML, fold the table under this summary line


@dataclass
class Figure:
    name: str  # unique within the document: the PNG's file name stem in Markdown
    png: bytes
    alt: str


Block = Heading | Paragraph | Table | Figure

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1f2328;
       max-width: 1200px; margin: 2em auto; padding: 0 1.5em; background: #fff; }
h1 { font-size: 1.7em; border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { font-size: 1.35em; margin-top: 2em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
h3 { font-size: 1.1em; margin-top: 1.6em; }
code { font: .9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: #f3f4f6;
       padding: .1em .3em; border-radius: 4px; }
.scroll { overflow-x: auto; margin: .8em 0; }
table { border-collapse: collapse; font-size: .88em; }
th, td { border: 1px solid #d0d7de; padding: .3em .6em; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; position: sticky; top: 0; }
td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafbfc; }
td.best, tr:nth-child(even) td.best { font-weight: 700; background: #dafbe1; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { font-size: .85em; color: #57606a; }
details summary { cursor: pointer; color: #0969da; margin: .5em 0; }
nav ul { columns: 2; }
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _inline_html(text: str) -> str:
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)


def slug(text: str) -> str:
    """An id / file-name-safe form of `text`."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _table_html(t: Table) -> str:
    head = "".join(f"<th>{_inline_html(h)}</th>" for h in t.header)
    body = []
    for i, row in enumerate(t.rows):
        cells = []
        for j, cell in enumerate(row):
            css = ' class="best"' if (i, j) in t.bold else ""
            cells.append(f"<td{css}>{_inline_html(cell)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    table = f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
    if t.collapsed:
        return f"<details><summary>{_inline_html(t.collapsed)}</summary>{table}</details>"
    return table


def _block_html(block: Block) -> str:
    if isinstance(block, Heading):
        return f'<h{block.level} id="{slug(block.text)}">{_inline_html(block.text)}</h{block.level}>'
    if isinstance(block, Paragraph):
        return f"<p>{_inline_html(block.text)}</p>"
    if isinstance(block, Table):
        return _table_html(block)
    data = base64.b64encode(block.png).decode("ascii")
    alt = html.escape(block.alt)
    return f'<figure><img src="data:image/png;base64,{data}" alt="{alt}"><figcaption>{alt}</figcaption></figure>'


def _nav(blocks: list[Block]) -> str:
    sections = [b.text for b in blocks if isinstance(b, Heading) and b.level == 2]
    if len(sections) < 2:
        return ""
    items = "".join(f'<li><a href="#{slug(s)}">{_inline_html(s)}</a></li>' for s in sections)
    return f"<nav><ul>{items}</ul></nav>"


def to_html(title: str, blocks: list[Block]) -> str:
    """One self-contained page: nothing outside it is ever requested."""
    body = "\n".join(_block_html(b) for b in blocks)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style></head>\n"
        f"<body>\n<h1>{_inline_html(title)}</h1>\n{_nav(blocks)}\n{body}\n</body></html>\n"
    )


def _cell_md(text: str, bold: bool) -> str:
    text = text.replace("|", "\\|")
    return f"**{text}**" if bold and text else text


def table_markdown(t: Table) -> str:
    """A GitHub-flavoured Markdown table (cells' pipes escaped, so a header such as `mean |Δ|` keeps its column)."""
    lines = ["| " + " | ".join(_cell_md(h, False) for h in t.header) + " |", "|" + "---|" * len(t.header)]
    for i, row in enumerate(t.rows):
        lines.append("| " + " | ".join(_cell_md(c, (i, j) in t.bold) for j, c in enumerate(row)) + " |")
    return "\n".join(([t.collapsed, ""] if t.collapsed else []) + lines)


def figure_file(markdown_path: Path, figure: Figure) -> Path:
    """Where a figure of a Markdown report goes: beside it, prefixed with the report's name."""
    return markdown_path.with_name(f"{markdown_path.stem}-{figure.name}.png")


def to_markdown(title: str, blocks: list[Block], path: Path) -> str:
    """Markdown whose figures link to `figure_file(path, figure)`."""
    parts = [f"# {title}"]
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Paragraph):
            parts.append(b.text)
        elif isinstance(b, Table):
            parts.append(table_markdown(b))
        else:
            parts.append(f"![{b.alt}]({figure_file(path, b).name})")
    return "\n\n".join(parts) + "\n"


def _bytes_writer(data: bytes) -> Callable[[Path], object]:
    return lambda p: p.write_bytes(data)


def write_document(title: str, blocks: list[Block], path: Path, fmt: str = "html") -> list[Path]:
    """Write the document as `fmt` ("html" or "md") to `path`; returns every file written."""
    if fmt == "html":
        atomic_write(path, lambda p: p.write_text(to_html(title, blocks), encoding="utf-8"))
        return [path]
    written = []
    for figure in (b for b in blocks if isinstance(b, Figure)):
        target = figure_file(path, figure)
        atomic_write(target, _bytes_writer(figure.png))
        written.append(target)
    atomic_write(path, lambda p: p.write_text(to_markdown(title, blocks, path), encoding="utf-8"))
    return [path, *written]
