"""The README's and docs/'s links, and the code's citations of docs/ pages, lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CITED_FROM = (
    "personaplex_tui",
    "model",
    "benchmarks",
    "tests",
    ".ci",
    "justfile",
    "README.md",
    "docs",
)
LINK = re.compile(r"\[[^\]]*\]\(([^()\s#]*)(?:#([^()\s]+))?\)")
# a docs/ page named, then § and a heading (a comment may break the line after the name)
CITATION = re.compile(r"(docs/[\w-]+\.md)`?(?:'s)?,?\s*[(\"]?\s*§\s*([^.;:,()\"]+)")


def _prose(text: str) -> str:
    """`text` without fenced code blocks and inline code spans (whose brackets are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _headings(page: Path) -> list[str]:
    """The page's headings as written, without the #s and the backticks."""
    found = re.findall(r"^#+\s+(.*?)\s*$", _prose_lines(page), flags=re.M)
    return [h.replace("`", "") for h in found]


def _prose_lines(page: Path) -> str:
    """The page without its fenced code blocks (a `# comment` there is no heading)."""
    return re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_github_anchor_follows_githubs_rule():
    heading = "Kernels on a fresh machine (`personaplex_tui/jit_workers.py`)".replace("`", "")
    assert github_anchor(heading) == "kernels-on-a-fresh-machine-personaplex_tuijit_workerspy"
    assert github_anchor("Peer comparison (benchmarks/peers.py)") == (
        "peer-comparison-benchmarkspeerspy"
    )


def test_every_link_of_the_readme_and_docs_leads_to_a_file_and_heading():
    broken = []
    for page in PAGES:
        for target, anchor in LINK.findall(_prose(page.read_text())):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            linked = (page.parent / target).resolve() if target else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} does not exist")
            elif anchor and linked.suffix == ".md":
                anchors = {github_anchor(h) for h in _headings(linked)}
                if anchor not in anchors:
                    broken.append(f"{page.name}: {target}#{anchor} names no heading")
    assert broken == []


def _sources(paths: tuple[str, ...]) -> list[Path]:
    """The code and pages under `paths` (files or folders of the repository)."""
    found = []
    for name in paths:
        path = ROOT / name
        found += [path] if path.is_file() else sorted(path.rglob("*"))
    kinds = (".py", ".cu", ".cuh", ".cc", ".md", "justfile")
    return [
        f
        for f in found
        if f.is_file() and f.name.endswith(kinds) and "__snapshots__" not in f.parts
    ]


def test_every_docs_page_and_section_the_code_cites_exists():
    files = _sources(CITED_FROM)
    assert len(files) > 100  # the walk found the code
    missing, cited = [], 0
    for file in files:
        text = file.read_text()
        for page in set(re.findall(r"docs/[\w-]+\.md", text)):
            if not (ROOT / page).is_file():
                missing.append(f"{file.relative_to(ROOT)}: {page} does not exist")
        # a comment's lines joined, their markers (#, //, *) dropped
        joined = re.sub(r"\n\s*(?:#|//|\*)?\s*", " ", text)
        for page, section in CITATION.findall(joined):
            if not (ROOT / page).is_file():
                continue
            cited += 1
            words = section.replace("`", "").split()
            headings = _headings(ROOT / page)
            # the citation's first words begin a heading (it may run on into the sentence)
            if not any(h.startswith(" ".join(words[:3])) for h in headings):
                missing.append(f"{file.relative_to(ROOT)}: {page} has no section {section!r}")
    assert cited > 40  # the pattern matched the citations
    assert missing == []
