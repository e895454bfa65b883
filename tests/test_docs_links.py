"""Every relative link in README.md, CHANGELOG.md and docs/ points at a file that exists."""

import re
from pathlib import Path

import pytest
from support import ROOT

# Linked before they land: written on another branch. Drop an entry once its file is here.
ARRIVING: dict[str, str] = {}  # links to files that a change in flight adds
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
DOCUMENTS = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").rglob("*.md")])


def relative_links(document: Path) -> list[str]:
    """Link targets that are neither URLs nor anchors, outside fenced code."""
    text = re.sub(r"^```.*?^```", "", document.read_text(), flags=re.MULTILINE | re.DOTALL)
    targets = (target.split("#")[0] for target in LINK.findall(text))
    return [t for t in targets if t and not re.match(r"[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_relative_links_resolve(document: Path) -> None:
    broken = []
    for target in relative_links(document):
        resolved = (document.parent / target).resolve()
        name = resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else target
        if not resolved.exists() and name not in ARRIVING:
            broken.append(target)
    assert not broken, f"{document.relative_to(ROOT)} links to missing files: {broken}"


def test_the_readme_links_every_design_chapter() -> None:
    readme = (ROOT / "README.md").read_text()
    for chapter in sorted((ROOT / "docs" / "design").glob("*.md")):
        assert f"docs/design/{chapter.name}" in readme, f"README.md does not link {chapter.name}"
