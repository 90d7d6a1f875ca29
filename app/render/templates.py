"""Jinja2 for campaign templates and the app's own pages: the only module that imports jinja2.

Templates run with autoescape (HTML and AMP) and StrictUndefined, so a typo is an error naming the
file and line instead of an empty string in thousands of emails. Profile data is optional by nature:
templates say so with ``| default(...)``.

amp-mustache templates inside the AMP part must reach the email untouched. The chosen approach is
Jinja's ``{% raw %}...{% endraw %}`` around every ``<template type="amp-mustache">``: one syntax for
marketers, visible in the source, and a forgotten ``raw`` fails loudly (StrictUndefined) or is caught
by the AMP validator on the rendered output.

The ``formatted`` filter writes a value the way list blocks write it in the amp-list JSON
(``app.render.formats``): ``{{ profile.loyalty.points | formatted("number") }}`` shows "4,514" in the
HTML part, as the AMP part does. Dates use the context's ``zone`` (the recipient's), else UTC.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.sandbox

from app.errors import OpentimeError
from app.render.formats import FormatError, format_value

PAGES_DIR = Path(__file__).resolve().parent.parent / "pages"


class TemplateError(OpentimeError):
    """A template failed to load or render; the message names the file and line."""


class MissingValue(TemplateError):
    """A template read a value the data does not have; ``name`` is the missing field or variable."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


class Templates:
    """Compiled templates of every campaign, loaded once and cached (no mtime checks per render)."""

    def __init__(self, templates_dir: Path) -> None:
        loader = jinja2.FileSystemLoader(templates_dir)
        common: dict[str, Any] = {
            "loader": loader,
            "undefined": jinja2.StrictUndefined,
            "auto_reload": False,
            "keep_trailing_newline": True,
        }
        self._markup = jinja2.Environment(autoescape=True, **common)
        self._text = jinja2.Environment(autoescape=False, **common)  # noqa: S701 - text/plain output
        for env in (self._markup, self._text):
            env.filters["formatted"] = _formatted
        self._strings: dict[str, jinja2.Template] = {}  # compiled once: compiling costs ~1 ms

    def render(self, name: str, context: Mapping[str, Any]) -> str:
        """Render ``name`` (a path under the templates folder); ``.txt`` files are not escaped."""
        env = self._text if name.endswith(".txt") else self._markup
        try:
            return env.get_template(name).render(context)
        except jinja2.TemplateNotFound:
            raise TemplateError(f"{name}: template not found") from None
        except jinja2.TemplateError as exc:
            raise TemplateError(_describe(exc, name)) from None

    def render_string(self, source: str, context: Mapping[str, Any], *, where: str) -> str:
        """Render a short template held in configuration (e.g. a subject line), not escaped."""
        try:
            template = self._strings.get(source)
            if template is None:
                template = self._strings[source] = self._text.from_string(source)
            return template.render(context)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{where}: {exc}") from None

    def check(self, name: str) -> None:
        """Compile a template now so syntax errors surface at start-up, not at first render."""
        env = self._text if name.endswith(".txt") else self._markup
        try:
            env.get_template(name)
        except jinja2.TemplateError as exc:
            raise TemplateError(_describe(exc, name)) from None


class TextTemplate:
    """A one-line template drawn into an image (``image`` blocks): compiled once, sandboxed, not escaped.

    Sandboxed because image layouts see profile data that came from outside; not escaped because the
    output is pixels, not HTML. ``variables`` names the context variables it reads (e.g. ``now``), so a
    caller can tell whether the output depends on more than the profile.
    """

    __slots__ = ("_template", "source", "variables", "where")

    def __init__(self, source: str, *, where: str) -> None:
        env = _text_sandbox()
        try:
            self._template = env.from_string(source)
            self.variables = frozenset(jinja2.meta.find_undeclared_variables(env.parse(source)))
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"{where}: {exc.message}") from None
        self.source = source
        self.where = where

    def render(self, context: Mapping[str, Any]) -> str:
        """The text; ``MissingValue`` when the data lacks a field it reads, ``TemplateError`` for other
        template errors (a Python error from a bad value, e.g. a number format applied to text, is
        raised as it is)."""
        try:
            return self._template.render(context)
        except jinja2.UndefinedError as exc:
            raise MissingValue(f"{self.where}: {exc}", _missing_name(exc.message or "")) from None
        except jinja2.TemplateError as exc:
            raise TemplateError(f"{self.where}: {exc}") from None


_UNDEFINED = re.compile(r"has no attribute '([^']*)'|'([^']*)' is undefined|no element (\S+)")


def _missing_name(message: str) -> str:
    """The field a StrictUndefined error names ("'dict object' has no attribute 'points'" → points)."""
    match = _UNDEFINED.search(message)
    return next((group for group in match.groups() if group), "?") if match else "?"


class _StrictFormat(jinja2.StrictUndefined):
    """StrictUndefined that also fails as *missing* inside ``'{:,}'.format(...)``: the plain one
    lets ``format()`` raise a TypeError there, which would read as a bad value."""

    def __format__(self, spec: str) -> str:
        self._fail_with_undefined_error()


@jinja2.pass_context
def _formatted(context: jinja2.runtime.Context, value: Any, spec: str) -> Any:
    """``{{ value | formatted("currency:USD") }}``: the text the amp-list JSON would carry."""
    zone = context.get("zone")
    try:
        return format_value(value, spec, zone if isinstance(zone, tzinfo) else UTC)
    except FormatError as exc:
        raise jinja2.TemplateRuntimeError(str(exc)) from None


@functools.cache
def _text_sandbox() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    return jinja2.sandbox.ImmutableSandboxedEnvironment(
        undefined=_StrictFormat, autoescape=False, auto_reload=False
    )


def render_page(name: str, context: Mapping[str, Any]) -> str:
    """Render one of the app's own HTML pages (``app/pages/<name>``), autoescaped."""
    return _page_environment().get_template(name).render(context)


@functools.cache
def _page_environment() -> jinja2.Environment:
    # Shipped with the code and never edited at run time: load once per process.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(PAGES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        auto_reload=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _describe(exc: jinja2.TemplateError, name: str) -> str:
    filename = getattr(exc, "filename", None) or getattr(exc, "name", None) or name
    lineno = getattr(exc, "lineno", None)
    if lineno is None:
        lineno = _line_from_traceback(exc, filename)
    where = f"{filename}, line {lineno}" if lineno else filename
    return f"{where}: {exc.message or type(exc).__name__}"


def _line_from_traceback(exc: BaseException, filename: str) -> int | None:
    """Jinja rewrites tracebacks so template frames carry the template's file and line."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(filename):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
