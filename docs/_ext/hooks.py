"""MkDocs hooks: the home page is the README, its links rewritten from the repository's root
to the site's (``docs/x.md`` becomes ``x.md``; the changelog has its own page)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri != "index.md":
        return markdown
    readme = (ROOT / "README.md").read_text()
    return readme.replace("](docs/", "](").replace("](CHANGELOG.md)", "](changelog.md)")
