"""Command templates: where a field may stand in a shell command, and how its value is quoted.

This is the driver's defence against shell injection, kept apart from the
connection handling so that it can be read, and tested, on its own. It is pure:
no I/O, no asyncssh.

A template is a :meth:`str.format` string whose fields (``{version}``,
``{id}``, ...) are replaced by values quoted with :func:`shlex.quote`. A quoted
value is exactly one shell word *only* where a bare word may stand: not inside
quotes, not after a backslash or a ``$``, not in a here-document.
:func:`template_fields` runs enough of a POSIX shell lexer over the template
(:class:`ShellState`) to refuse every other place, and :func:`render` does the
substitution.
"""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Mapping
from typing import Final

import attrs

from rolling import ConfigError

__all__ = [
    "BUILTIN_FIELDS",
    "FIELD_FIX",
    "ShellState",
    "check_template",
    "render",
    "template_fields",
]

BUILTIN_FIELDS: Final = frozenset({"version", "id", "host", "port"})
"""The fields every host has; any other field is a label key."""

FIELD_FIX: Final = "use {version}, {id}, {host}, {port} or a label key, as a bare shell word"

_HEREDOC = re.compile(r"(?<!<)<<(?!<)")
"""A here-document operator (``<<`` or ``<<-``, not the here-string ``<<<``)."""


_CLOSERS: Final = {"'": "'", '"': '"', "$'": "'", "`": "`"}
"""The character that ends each quoting context."""


@attrs.define
class ShellState:
    """Enough of a POSIX shell lexer's state to tell whether a field would stand as a bare word.

    A field's value is quoted with ``shlex.quote``, which makes it one word
    in unquoted context only: inside double quotes or backticks its quotes are
    literal characters or re-parsed; after ``$`` it becomes ANSI-C quoting;
    after a backslash its opening quote is escaped; in a here-document body it
    is expanded unquoted. Templates that would do any of that are refused.
    """

    contexts: list[str] = attrs.Factory(list[str])
    """Open quoting contexts, innermost last: ``'``, ``"``, ``$'`` or a backtick."""
    escaped: bool = False
    """The text so far ends in an unescaped backslash."""
    dollar: bool = False
    """The text so far ends in an unescaped ``$``."""
    seen: str = ""
    """The literal text so far."""

    def feed(self, text: str) -> None:
        """Advance over literal template text."""
        self.seen += text
        for char in text:
            self._step(char)

    def _step(self, char: str) -> None:
        if self.escaped:
            self.escaped = self.dollar = False
            return
        dollar, self.dollar = self.dollar, False
        context = self.contexts[-1] if self.contexts else None
        if context is not None and char == _CLOSERS[context]:
            self.contexts.pop()
        elif context == "'":
            return  # nothing is special inside single quotes
        elif char == "\\":
            self.escaped = True
        elif context is None and char in {"'", '"', "`"}:
            self.contexts.append("$'" if dollar and char == "'" else char)
        elif context == '"' and char == "`":
            self.contexts.append(char)
        elif context is None and char == "$":
            self.dollar = True

    def problem(self) -> str | None:
        """Why a field cannot stand here, or None when it can."""
        if self.contexts:
            kind = {"'": "single quotes", '"': "double quotes", "$'": "$'...' quotes"}
            return "is inside " + kind.get(self.contexts[-1], "backticks")
        if self.escaped:
            return "follows a backslash, which would escape its opening quote"
        if self.dollar:
            return "follows a $, which would turn its quotes into $'...' quoting"
        if _HEREDOC.search(self.seen):
            return "follows a here-document operator (<<), whose body is expanded unquoted"
        return None


def template_fields(field: str, template: object) -> frozenset[str]:
    """Check one command template and return the names of the fields it uses.

    A field must be a bare name (no index, attribute, conversion or format spec:
    those would act on the quoted value and could break its quoting), and must
    stand as a bare shell word (see :class:`ShellState`).
    """
    if not isinstance(template, str) or not template.strip():
        raise ConfigError(field, f"expected a non-empty command, got {template!r}", FIELD_FIX)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(
            field,
            f"{template!r} is not a valid template ({exc})",
            "write a literal brace as {{ or }}",
        ) from None
    names: set[str] = set()
    state = ShellState()
    for literal, name, spec, conversion in parsed:
        state.feed(literal)
        if name is None:
            continue
        if not name.isidentifier():
            raise ConfigError(field, f"field {{{name}}} in {template!r} is not a name", FIELD_FIX)
        if spec or conversion:
            raise ConfigError(
                field,
                f"field {{{name}}} in {template!r} has a conversion or format spec",
                "write the field bare, such as {version}: the value is substituted as it is",
            )
        problem = state.problem()
        if problem is not None:
            raise ConfigError(
                field,
                f"field {{{name}}} in {template!r} {problem}",
                "write the field as a bare word (its value is quoted for the shell already),"
                " such as printf %s {version} > VERSION",
            )
        state.feed("x")  # the quoted value: one plain word, whatever it holds
        names.add(name)
    if state.contexts:
        raise ConfigError(
            field,
            f"{template!r} has an unterminated {state.contexts[-1]} quote",
            "close every quote in the command",
        )
    return frozenset(names)


def check_template(
    field: str, value: object, *, probe: bool = False, optional: bool = False
) -> None:
    if value is None and optional:
        return
    if "version" in template_fields(field, value) and probe:
        raise ConfigError(
            field,
            f"{value!r} uses {{version}}, which the probe is there to find out",
            'print the version the host runs, such as "cat /srv/app/VERSION"',
        )


def render(template: str, values: Mapping[str, str]) -> str:
    """Substitute ``values`` into ``template``, each quoted with ``shlex.quote``.

    Raises:
        KeyError: The template uses a field ``values`` lacks.
    """
    parts: list[str] = []
    for literal, name, _spec, _conversion in string.Formatter().parse(template):
        parts.append(literal)
        if name is not None:
            parts.append(shlex.quote(values[name]))
    return "".join(parts)
