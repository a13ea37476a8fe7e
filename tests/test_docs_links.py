"""Every link in README.md and docs/*.md leads somewhere, checked without the network.

Relative links must name a file or directory of this repository; a ``#fragment`` must name a
heading of the target Markdown file (slugged as GitHub renders heading ids) or an explicit
``<a id=...>``/``<a name=...>`` anchor. Web links (http, https) are only checked to be well
formed: a scheme, a plausible host name, no spaces. Links inside code blocks and code spans
are not links and are ignored.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]"  # [text], allowing one level of nested brackets
    r"\(\s*(?P<target><[^>]*>|[^\s)]+)"  # (target or (<target with spaces>
    r"(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)"  # optional "title"
)
_REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(?P<target><[^>]*>|\S+)")
_AUTOLINK = re.compile(r"<(?P<target>https?://[^>\s]*)>")
_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}(?:\s+(?P<text>.*?))?(?:\s+#+)?\s*$")
_SETEXT_UNDERLINE = re.compile(r"^ {0,3}(?:=+|-+)\s*$")
_HTML_ANCHOR = re.compile(r"<a\s[^>]*\b(?:id|name)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
_HOST = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}$|^localhost$", re.I)


@dataclass(frozen=True)
class Link:
    page: Path
    line: int
    target: str

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}: {self.target}"


def prose_lines(text: str) -> list[str]:
    """The page's lines with fenced code blocks blanked and code spans removed, so that
    nothing shown as code is taken for a link or a heading. Line numbers are kept."""
    lines = text.splitlines()
    out: list[str] = []
    fence: str | None = None
    for line in lines:
        match = _FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)[0] * len(match.group(1))
            out.append("")
        elif fence is not None:
            if line.strip().startswith(fence) and set(line.strip()) == {fence[0]}:
                fence = None
            out.append("")
        else:
            out.append(line)
    return out


def links_of(page: Path) -> Iterator[Link]:
    """Every link target on the page: inline links and images, reference definitions and
    ``<http...>`` autolinks."""
    for number, line in enumerate(prose_lines(page.read_text(encoding="utf-8")), start=1):
        without_code = _CODE_SPAN.sub("", line)
        definition = _REFERENCE_DEFINITION.match(without_code)
        if definition:
            yield Link(page, number, definition.group("target").strip("<>"))
            continue
        for match in _INLINE_LINK.finditer(without_code):
            yield Link(page, number, match.group("target").strip("<>"))
        for match in _AUTOLINK.finditer(without_code):
            yield Link(page, number, match.group("target"))


def github_slug(heading: str) -> str:
    """The id GitHub gives a heading: the rendered text, lower-cased, with punctuation
    dropped and each space turned into a hyphen (``"Running `map()` on x"`` ->
    ``"running-map-on-x"``). Code spans keep their text as written; emphasis markers and
    link targets are not part of the rendered text."""
    rendered = []
    for part in re.split(r"(`+[^`]*`+)", heading):
        if part.startswith("`"):
            rendered.append(part.strip("`"))
            continue
        part = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", part)  # a link renders as its text
        part = re.sub(r"<[^>]+>", "", part)  # inline HTML tags
        part = re.sub(r"(?<!\w)[*_]+|[*_]+(?!\w)", "", part)  # emphasis markers
        rendered.append(part)
    text = "".join(rendered).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors_of(page: Path) -> set[str]:
    """The fragment ids a link may use on ``page``: its heading slugs (a repeated heading
    gets ``-1``, ``-2``... as on GitHub) and its explicit HTML anchors."""
    text = page.read_text(encoding="utf-8")
    lines = prose_lines(text)
    headings: list[str] = []
    for index, line in enumerate(lines):
        atx = _ATX_HEADING.match(line)
        if atx:
            headings.append(atx.group("text") or "")
        elif (
            _SETEXT_UNDERLINE.match(line)
            and index > 0
            and lines[index - 1].strip()
            and not _ATX_HEADING.match(lines[index - 1])
            and not lines[index - 1].lstrip().startswith(("|", "-", "*", ">"))
        ):
            headings.append(lines[index - 1].strip())
    anchors: set[str] = set()
    seen: Counter[str] = Counter()
    for heading in headings:
        slug = github_slug(heading)
        anchors.add(slug if seen[slug] == 0 else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    anchors.update(_HTML_ANCHOR.findall(text))
    return anchors


def problem_with(link: Link) -> str | None:
    """Why the link is broken, or ``None`` when it is fine."""
    target = link.target
    parts = urlsplit(target)
    if parts.scheme in ("http", "https"):
        host = parts.hostname or ""
        if not parts.netloc or not _HOST.match(host):
            return f"no valid host name in {target!r}"
        if any(c.isspace() for c in target) or "\\" in target:
            return "spaces or backslashes in a web address"
        try:
            _ = parts.port
        except ValueError:
            return "a bad port number"
        return None
    if parts.scheme or target.startswith("//"):
        return None  # mailto: and the like: nothing to check offline
    path_text, _, fragment = target.partition("#")
    path_text = unquote(path_text.partition("?")[0])
    if path_text:
        destination = (link.page.parent / path_text).resolve()
        if destination != ROOT and ROOT not in destination.parents:
            return "points outside the repository"
        if not destination.exists():
            return f"no such file: {destination.relative_to(ROOT)}"
    else:
        destination = link.page
    if fragment:
        if destination.is_dir() or destination.suffix.lower() != ".md":
            return None  # GitHub's line anchors (#L10) and the like: not checked
        if unquote(fragment) not in anchors_of(destination):
            return f"no heading or anchor #{fragment} in {destination.relative_to(ROOT)}"
    return None


def test_pages_are_found() -> None:
    names = {page.name for page in PAGES}
    assert {"README.md", "index.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_link_resolves(page: Path) -> None:
    broken = [f"{link}: {problem}" for link in links_of(page) if (problem := problem_with(link))]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_docs_link_to_each_other() -> None:
    """The check above finds links at all (a regex that matched nothing would pass it)."""
    index = ROOT / "docs" / "index.md"
    targets = {link.target.partition("#")[0] for link in links_of(index)}
    pages = {page.name for page in PAGES if page.parent.name == "docs" and page != index}
    assert pages <= targets, f"docs/index.md does not list: {sorted(pages - targets)}"


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Where it differs from the stdlib pool", "where-it-differs-from-the-stdlib-pool"),
        ("Running `map()` on a dask cluster", "running-map-on-a-dask-cluster"),
        ("`last_plan` and `to_dict()`", "last_plan-and-to_dict"),
        ("Containers & cgroup limits", "containers--cgroup-limits"),
        ("Python 3.14's default", "python-314s-default"),
        ("**Bold** and _emphasis_ [linked](x.md)", "bold-and-emphasis-linked"),
    ],
)
def test_github_slug(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


def test_code_is_not_scanned_for_links_or_headings(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n```python\n# not a heading\nx = a[0](b)  # [not](a-link.md)\n```\n\n"
        "Text with `[code](span.md)` and [a link](#title).\n\n"
        "Setext heading\n--------------\n",
        encoding="utf-8",
    )
    assert [link.target for link in links_of(page)] == ["#title"]
    assert anchors_of(page) == {"title", "setext-heading"}


@pytest.mark.parametrize(
    ("target", "fine"),
    [
        ("https://github.com/joblib/loky", True),
        ("http://localhost:8000/x", True),
        ("https:/github.com", False),
        ("https://exa mple.com", False),
        ("https://", False),
        ("https://example.com:http/", False),
    ],
)
def test_web_links_are_checked_for_form(target: str, fine: bool) -> None:
    link = Link(ROOT / "README.md", 1, target)
    assert (problem_with(link) is None) is fine
