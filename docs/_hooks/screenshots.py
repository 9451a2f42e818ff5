"""mkdocs hook: a page containing <!-- screenshots --> lists the images in docs/img/ (if any yet)."""

from __future__ import annotations

from pathlib import Path

MARK = "<!-- screenshots -->"


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001 - mkdocs' objects
    if MARK not in markdown:
        return markdown
    img_dir = Path(config["docs_dir"]) / "img"
    shots = sorted(p for p in img_dir.glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".svg"))
    depth = page.file.src_uri.count("/")
    prefix = "../" * depth
    if not shots:
        text = "*No screenshot recorded yet: the browser test writes them to `docs/img/`.*"
    else:
        text = "\n\n".join(f"![{p.stem}]({prefix}img/{p.name})" for p in shots)
    return markdown.replace(MARK, text)
