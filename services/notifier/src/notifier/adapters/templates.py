"""Message templates: one file per event, language and format, editable without a release.

`<event>.<lang>.subject`, `.txt` (plain text: email, in-app inbox, Slack), `.html` (email)
and `.md` (chat robots). Files in `NOTIFIER_TEMPLATE_DIR` replace the built-in ones of the
same name, file by file. Every template is compiled at start, so a broken edit stops the
service with the file named instead of failing on the first event.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
    TemplateError,
)

from .. import domain

FORMATS = ("subject", "txt", "html", "md")
EVENTS = tuple(domain.TITLES)


class TemplateProblem(Exception):
    """A template cannot be loaded or compiled; the message names the file."""


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    markdown: str


_BLANK_LINES = re.compile(r"\n{3,}")


def _tidy(text: str) -> str:
    return _BLANK_LINES.sub("\n\n", text).strip() + "\n"


class Templates:
    def __init__(self, override: Path | None = None) -> None:
        if override is not None and not override.is_dir():
            raise TemplateProblem(f"{override}: NOTIFIER_TEMPLATE_DIR is not a directory")
        loaders: list[BaseLoader] = [PackageLoader("notifier", "templates")]
        if override is not None:
            loaders.insert(0, FileSystemLoader(override))
        loader = ChoiceLoader(loaders)
        options: dict[str, Any] = {
            "loader": loader,
            "undefined": StrictUndefined,
            "trim_blocks": True,
            "lstrip_blocks": True,
        }
        # the subject, text and Markdown go out as they are; only HTML is escaped
        self._plain = Environment(autoescape=False, **options)  # noqa: S701
        self._html = Environment(autoescape=True, **options)

    def check(self) -> None:
        """Compile every template of every event and language."""
        for event in EVENTS:
            for language in domain.LANGUAGES:
                for fmt in FORMATS:
                    name = f"{event}.{language}.{fmt}"
                    env = self._html if fmt == "html" else self._plain
                    try:
                        env.get_template(name)
                    except TemplateError as exc:
                        raise TemplateProblem(f"template {name}: {exc}") from exc

    def render(self, event_type: str, language: str, context: dict[str, Any]) -> Rendered:
        def one(fmt: str) -> str:
            env = self._html if fmt == "html" else self._plain
            return env.get_template(f"{event_type}.{language}.{fmt}").render(
                language=language, **context
            )

        return Rendered(
            subject=domain.one_line(one("subject")),
            text=_tidy(one("txt")),
            html=one("html"),
            markdown=_tidy(one("md")),
        )
