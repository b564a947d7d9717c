"""Jinja2 templates: one set of files per event, overridable from CONFIG_DIR/templates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape

PACKAGE_TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    markdown: str
    html: str


class TemplateRenderer:
    """Renders `<event>.subject.j2`, `<event>.txt.j2`, `<event>.md.j2` and optionally `<event>.html.j2`."""

    def __init__(self, override_dir: Path | None = None):
        loaders = [FileSystemLoader(str(override_dir))] if override_dir and override_dir.is_dir() else []
        loaders.append(FileSystemLoader(str(PACKAGE_TEMPLATES)))
        self.env = Environment(
            loader=ChoiceLoader(loaders),
            autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False, default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )

    def events(self) -> list[str]:
        """Every event that has a template set (the package's and the overrides')."""
        names = self.env.list_templates(filter_func=lambda name: name.endswith(".subject.j2"))
        return sorted({name.removesuffix(".subject.j2") for name in names})

    def render(self, event: str, context: dict) -> Rendered:
        subject = " ".join(self.env.get_template(f"{event}.subject.j2").render(context).split())
        text = self.env.get_template(f"{event}.txt.j2").render(context).strip() + "\n"
        markdown = self.env.get_template(f"{event}.md.j2").render(context).strip() + "\n"
        try:
            html_template = self.env.get_template(f"{event}.html.j2")
        except TemplateNotFound:
            html_template = self.env.get_template("_default.html.j2")
        html = html_template.render({"ui_url": None, **context, "subject": subject, "text": text})
        return Rendered(subject=subject, text=text, markdown=markdown, html=html)
