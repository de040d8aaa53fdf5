"""The README and docs/: every relative link and #anchor leads somewhere, the screenshot is
there, a fresh machine needs exactly the two documented set-up commands, and the close codes a
client must handle are explained."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "docs" / "protocol.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_docs_every_relative_link_resolves(page: Path) -> None:
    text = page.read_text()
    links = [link for link in LINK.findall(text) if "://" not in link]
    assert links
    for link in links:
        target, _, anchor = link.partition("#")
        if target:
            assert (page.parent / target).exists(), link
        else:
            assert anchor in anchors(text), link


def test_readme_links_the_spec_the_protocol_page_and_the_screenshot() -> None:
    links = set(LINK.findall((ROOT / "README.md").read_text()))
    assert {
        "docs/DATA_PROCESSING_FLOW.md",
        "docs/protocol.md",
        "deploy/OPERATIONS.md",
        "docs/dashboard.png",
    } <= links
    assert (ROOT / "docs" / "dashboard.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_readme_has_exactly_the_two_set_up_commands() -> None:
    text = (ROOT / "README.md").read_text()
    installs = re.findall(r"^.*\bpip install\b.*$", text, re.MULTILINE)
    assert installs == [
        "pip install . && droneflow serve",
        "pip install -e '.[test]' && pytest",
    ]


def test_readme_explains_the_close_codes_a_client_must_handle() -> None:
    text = (ROOT / "README.md").read_text()
    for code in ("1012", "4000"):
        assert re.search(rf"^\| {code} \|", text, re.MULTILINE), code
