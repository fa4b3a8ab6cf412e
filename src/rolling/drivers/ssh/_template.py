r"""Command templates: where a field may stand in a shell command, and how its value is quoted.

This is the driver's defence against shell injection, kept apart from the
connection handling so that it can be read, and tested, on its own. It is pure:
no I/O, no asyncssh.

A template is a :meth:`str.format` string whose fields (``{version}``,
``{id}``, ...) are replaced by values quoted with :func:`shlex.quote`. A quoted
value stays one literal piece of one shell word only in some places, so this
module accepts a field only where it is *sure* the shell reads it that way, and
refuses every other template with a :class:`~rolling.ConfigError` naming the
template and the field. It does not try to parse all of the shell: what it
does not follow exactly, it refuses.

The rule
--------

1. **No value holds a control character** (Unicode category Cc: newline, CR,
   tab, NUL, ESC, DEL, ...). Versions, host names, addresses and label values
   are checked when they are given (:func:`check_value`); :func:`render`
   refuses them again.

2. **A field stands unquoted, in a word of a command at the top level of the
   template**: a whole word (``install {version}``) or part of one
   (``--zone={zone}``, ``/srv/{version}.tar``). Not inside ``'...'``, ``"..."``
   or ``$'...'``; not inside ``$(...)``, ``${...}``, backticks or arithmetic;
   not in a comment (``# ...``: a ``#`` that starts a word); not right after
   ``$`` or a backslash. The template itself holds no control character but
   tab and newline.

3. **The lexer gives up at what it does not follow exactly, and refuses every
   field after it** (fields before it are fine): a backtick, arithmetic
   (``$((``, ``((``, ``$[``), a ``${`` other than ``${name}``, a here-document
   (``<<``), ``\'`` inside ``$'...'`` (older dash ends the quote there), ``<#``
   or ``>#`` (ksh operators), and inside ``$(...)`` a comment or a ``case``
   (whose patterns end in an unmatched ``)``).

4. **A field is not given to a shell builtin that evaluates its arguments**:
   as code (``eval``, ``source``, ``.``, ``trap``, ...), as arithmetic
   (``let``, ``[[ ... ]]``), or as variable names, whose array subscripts the
   shell evaluates as arithmetic, which runs ``$(...)`` in them (``declare``,
   ``typeset``, ``local``, ``readonly``, ``export``, ``read``, ``mapfile``,
   ``unset``, ``getopts``, ``printf -v``, ``wait -p``, ``test -v`` /
   ``[ -v ... ]``), also behind ``command`` or ``builtin``; nor is it in the
   name or subscript of an assignment (``a[{version}]=1``). This check reads
   the template's own words: it catches the usual mistakes, not a template
   written to hide them.

Not covered, and documented: what a command does with its arguments (a script
that hands one to ``eval``, ``sh -c`` or ``ssh``; a variable assigned from a
field and used in arithmetic later). Commands run through the login shell of the
SSH user, which must be a POSIX shell (sh, dash, bash, ksh, zsh, busybox sh).

:func:`template_fields` runs the lexer (:class:`ShellState`) over a template and
applies rules 2 to 4; :func:`render` does the substitution.
"""

from __future__ import annotations

import re
import shlex
import string
from collections.abc import Mapping, Sequence
from typing import Final, Literal

import attrs

from rolling import ConfigError

__all__ = [
    "BUILTIN_FIELDS",
    "CONTROL",
    "FIELD_FIX",
    "ShellState",
    "Token",
    "check_template",
    "check_value",
    "command_problem",
    "render",
    "template_fields",
]

BUILTIN_FIELDS: Final = frozenset({"version", "id", "host", "port"})
"""The fields every host has; any other field is a label key."""

FIELD_FIX: Final = "use {version}, {id}, {host}, {port} or a label key, as a bare shell word"

CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""Control characters (Unicode category Cc), which no value put into a command may hold."""

_TEMPLATE_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""Control characters a template may not hold: all but tab and newline."""

_BARE_FIX: Final = (
    "write the field as a bare word (its value is quoted for the shell already),"
    " such as printf %s {version} > VERSION"
)
_SCRIPT_FIX: Final = (
    "pass the value as its own word to a command or a script on the host, such as"
    " /srv/app/install {version}, and do the rest there"
)
_OPAQUE_FIX: Final = "put the field before it, or " + _SCRIPT_FIX

_BLANKS: Final = frozenset(" \t")
_METACHARACTERS: Final = frozenset(";&|()<>\n")
_NAME_CHARS: Final = frozenset(string.ascii_letters + string.digits + "_")
_HEREDOC: Final = 2
"""Unquoted ``<`` in a row that make a here-document (three make a here-string)."""
_MARK: Final = "\x00"
"""Stands for a field in a :class:`Token`'s text (templates hold no NUL)."""

_INSIDE: Final = {
    "'": "is inside single quotes",
    '"': "is inside double quotes",
    "$'": "is inside $'...' quotes",
    "$(": "is inside a $(...) command substitution",
    "(": "is inside a $(...) command substitution",
    "${": "is inside a ${...} expansion",
    "#": "is in a comment",
}
_UNTERMINATED: Final = {
    "'": "' quote",
    '"': '" quote',
    "$'": "$' quote",
    "$(": "$( command substitution",
    "(": "( inside $(...)",
    "${": "${ expansion",
}

_CODE: Final = "runs its arguments as shell code"
_ARITHMETIC: Final = "evaluates its arguments as arithmetic, which runs the $(...) in a[$(...)]"
_SUBSCRIPTS: Final = (
    "whose array subscripts the shell evaluates as arithmetic, which runs the $(...) in a[$(...)]"
)
_NAMES: Final = f"takes variable names, {_SUBSCRIPTS}"
_EVALUATING: Final = {
    "eval": _CODE,
    "source": _CODE,
    ".": _CODE,
    "trap": _CODE,
    "alias": _CODE,
    "fc": _CODE,
    "compgen": _CODE,
    "complete": _CODE,
    "let": _ARITHMETIC,
    "[[": "evaluates the operands of -eq, -lt and the like as arithmetic, and -v's as a"
    " variable name, which runs the $(...) in a[$(...)]",
    "declare": _NAMES,
    "typeset": _NAMES,
    "local": _NAMES,
    "readonly": _NAMES,
    "export": _NAMES,
    "integer": _NAMES,
    "float": _NAMES,
    "nameref": _NAMES,
    "read": _NAMES,
    "readarray": _NAMES,
    "mapfile": _NAMES,
    "unset": _NAMES,
    "getopts": _NAMES,
}
"""Builtins that evaluate their arguments: no field may be one of them."""

_EVALUATING_OPTION: Final = {"printf": "v", "wait": "p"}
"""Builtins that take a variable name with this option: no field with it."""

_TEST_NAME_OPERATORS: Final = frozenset({"-v", "-R"})
"""``test`` and ``[`` operators whose operand is a variable name."""

_RESERVED: Final = frozenset(
    {"!", "{", "}", "if", "then", "elif", "else", "fi", "do", "done", "while", "until", "esac"}
)
"""Reserved words after which the next word is still a command name."""

_WRAPPERS: Final = frozenset({"command", "builtin"})
"""Builtins that run the builtin named by their first argument."""

_ASSIGNMENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\[[^\]]*\])?\+?=")

_OPERATORS: Final = (
    ";;&", "&>>", "<<<", "<<-",
    "&&", "||", ";;", ";&", "|&", "&>", ">>", "<<", "<>", ">&", "<&", ">|",
    ";", "&", "|", "(", ")", "<", ">", "\n",
)  # fmt: skip
"""The shell's operators, longest first."""

_REDIRECTIONS: Final = frozenset(
    {"&>>", "<<<", "<<-", "&>", ">>", "<<", "<>", ">&", "<&", ">|", "<", ">"}
)


@attrs.define
class Token:
    """A word, or a run of operators, at the top level of a template."""

    kind: Literal["word", "op"]
    text: str = ""
    """A word's characters without its quotes (a field as NUL), or the operator characters."""
    fields: list[str] = attrs.Factory(list[str])
    """The fields in a word."""
    quoted: bool = False
    """A word has quotes in it (so it is no reserved word)."""
    glued: bool = False
    """A run of operators follows a word with no blank in between (``2>``)."""


@attrs.define
class ShellState:
    """Enough of a POSIX shell lexer's state to tell whether a field would stand as a bare word.

    A field's value is quoted with ``shlex.quote``, which makes it one word
    in unquoted context only: inside double quotes or backticks its quotes are
    literal characters or re-parsed; after ``$`` it becomes ANSI-C quoting;
    after a backslash its opening quote is escaped; in a comment or a
    here-document body it is not what the shell reads as a word. The state
    follows quotes, ``$(...)`` (recursively), ``${name}`` and comments exactly,
    and gives up (:attr:`opaque`) at anything else that could change how
    the rest is read. At the top level it also cuts the template into
    :attr:`tokens`, for :func:`command_problem`.
    """

    contexts: list[str] = attrs.Factory(list[str])
    """Open contexts, innermost last: ``'``, ``"``, ``$'``, ``$(``, ``(`` (in ``$(``),
    ``${`` or ``#`` (a comment)."""
    escaped: bool = False
    """The text so far ends in an unescaped backslash."""
    dollar: bool = False
    """The text so far ends in an unescaped ``$``."""
    seen: str = ""
    """The literal text so far (a field as ``x``)."""
    opaque: str | None = None
    """What the lexer gave up at; no field after it is accepted."""
    word_start: bool = True
    """The next character would start a word (where a ``#`` starts a comment)."""
    tokens: list[Token] = attrs.Factory(list[Token])
    """The top-level words and operators so far."""
    _paren: bool = False
    """The last character was an unquoted ``(`` (another makes arithmetic ``((``)."""
    _less: int = 0
    """Unquoted ``<`` in a row just before (two make a here-document)."""
    _redirect: bool = False
    """The last character was an unquoted ``<`` or ``>`` (``<#`` and ``>#`` are ksh operators)."""
    _name: str = ""
    """The word being read inside ``$(...)``, to spot ``case``."""
    _word: Token | None = None
    """The top-level word being read."""
    _ops: Token | None = None
    """The top-level run of operators being read."""
    _splice: tuple[int, bool, bool, bool] = (0, False, False, False)
    """The state before a backslash, back if a newline follows it (joining the two lines)."""

    def feed(self, text: str) -> None:
        """Advance over literal template text."""
        self.seen += text
        for char in text:
            self._step(char)

    def field(self, name: str) -> str | None:
        """Advance over a field: why it cannot stand here, or None when it can."""
        problem = self.problem()
        self.seen += "x"
        if problem is None:
            word = self._top_word()
            word.text += _MARK
            word.fields.append(name)
            self.word_start = self.dollar = self._paren = self._redirect = False
            self._less = 0
        return problem

    def finish(self) -> str | None:
        """End the template: what is left open, or None."""
        if self.opaque is None and self._less == _HEREDOC:
            self._give_up("a here-document (<<)")
        if self._word is not None:
            self.tokens.append(self._word)
            self._word = None
        if self.opaque is not None or not self.contexts or self.contexts[-1] == "#":
            return None
        return f"has an unterminated {_UNTERMINATED[self.contexts[-1]]}"

    def problem(self) -> str | None:
        """Why a field cannot stand here, or None when it can."""
        if self.opaque is not None:
            return (
                f"is inside or after {self.opaque}; this check does not follow the shell past that"
            )
        if self._less == _HEREDOC:
            return "follows a here-document operator (<<), whose body the shell reads as text"
        if self.contexts:
            return _INSIDE[self.contexts[-1]]
        if self.escaped:
            return "follows a backslash, which would escape its opening quote"
        if self.dollar:
            return "follows a $, which would turn its quotes into $'...' quoting"
        return None

    def _give_up(self, what: str) -> None:
        self.opaque = what

    def _top_word(self) -> Token:
        if self._word is None:
            self._word = Token("word")
            self._ops = None
        return self._word

    def _word_char(self, char: str, context: str | None) -> None:
        if context is None:
            self._top_word().text += char
        else:
            self._name += char

    def _quoted_char(self, char: str) -> None:
        if len(self.contexts) == 1 and self._word is not None:
            self._word.text += char

    def _end_word(self, context: str | None) -> bool:
        """End the word being read; whether there was one at the top level."""
        if context is not None:
            if self._name == "case":
                self._give_up('a case inside $(...) (its patterns end in an unmatched ")")')
            self._name = ""
            return False
        if self._word is None:
            return False
        self.tokens.append(self._word)
        self._word = None
        return True

    def _operator(self, char: str, *, glued: bool) -> None:
        if char in _BLANKS:
            self._ops = None
            return
        if self._ops is None:
            self._ops = Token("op", glued=glued)
            self.tokens.append(self._ops)
        self._ops.text += char

    def _stopped(self) -> bool:
        return self.opaque is not None

    def _step(self, char: str) -> None:
        if self.opaque is not None:
            return
        context = self.contexts[-1] if self.contexts else None
        if context == "#":
            if char == "\n":
                self.contexts.pop()
                self.word_start = True
                self._operator(char, glued=False)
            return
        less, self._less = self._less, 0
        paren, self._paren = self._paren, False
        redirect, self._redirect = self._redirect, False
        if less == _HEREDOC and char != "<":
            self._give_up("a here-document (<<)")
        elif self.escaped:
            self._escaped(char, context)
        else:
            self._unescaped(char, context, less=less, paren=paren, redirect=redirect)

    def _unescaped(
        self, char: str, context: str | None, *, less: int, paren: bool, redirect: bool
    ) -> None:
        dollar, self.dollar = self.dollar, False
        if context in {"'", "$'", "${"}:
            self._quoted(char, context)
        elif char == "`":
            self._give_up("a `...` command substitution (backticks)")
        elif char == "\\":
            self.escaped = True
            self._splice = (less, paren, redirect, dollar)
        elif dollar and self._after_dollar(char, context):
            pass
        elif context == '"':
            if char == '"':
                self.contexts.pop()
            else:
                self.dollar = char == "$"
                self._quoted_char(char)
        else:
            self._script(char, context, less=less, paren=paren, redirect=redirect)

    def _escaped(self, char: str, context: str | None) -> None:
        """The character after a backslash."""
        self.escaped = False
        if context == "$'" and char == "'":
            self._give_up("a \\' inside $'...' quotes, where older shells end the quote")
        elif char == "\n" and context in {None, "$(", "(", '"'}:
            # A backslash-newline joins two lines: the shell reads on as if neither were there.
            self._less, self._paren, self._redirect, self.dollar = self._splice
        elif context in {None, "$(", "("}:
            self.word_start = False
            self._word_char(char, context)
        else:
            self._quoted_char(char)

    def _quoted(self, char: str, context: str | None) -> None:
        """A character inside '...', $'...' or ${...}."""
        if context == "${":
            if char == "}":
                self.contexts.pop()
            elif char not in _NAME_CHARS:
                self._give_up("a ${...} expansion other than ${name}")
        elif char == "'":
            self.contexts.pop()
        elif char == "\\" and context == "$'":
            self.escaped = True
        else:
            self._quoted_char(char)

    def _after_dollar(self, char: str, context: str | None) -> bool:
        """A character after an unescaped $: whether it opened something."""
        if char == "(":
            self.contexts.append("$(")
            self._paren = self.word_start = True
            self._name = ""
        elif char == "{":
            self.contexts.append("${")
        elif char == "[":
            self._give_up("$[...] arithmetic")
        elif char == "'" and context != '"':
            if context is None:
                self._top_word().quoted = True
            self.contexts.append("$'")
        else:
            return False
        return True

    def _script(
        self, char: str, context: str | None, *, less: int, paren: bool, redirect: bool
    ) -> None:
        """A character at the top level, or inside $(...)."""
        if char in _BLANKS or char in _METACHARACTERS:
            self._boundary(char, context, less=less, paren=paren)
        elif char == "#" and self.word_start:
            if redirect:
                self._give_up("<# or ># (a ksh operator)")
            elif context is None:
                self.contexts.append("#")
            else:
                self._give_up("a comment inside $(...)")
        elif char in {"'", '"'}:
            self.word_start = False
            if context is None:
                self._top_word().quoted = True
            self.contexts.append(char)
        else:
            self.word_start = False
            self.dollar = char == "$"
            self._word_char(char, context)

    def _boundary(self, char: str, context: str | None, *, less: int, paren: bool) -> None:
        """A blank or an operator character, outside quotes."""
        glued = self._end_word(context)
        if self._stopped():
            return
        if char == "(":
            if paren:
                self._give_up("((...)) arithmetic")
                return
            self._paren = True
            if context is not None:
                self.contexts.append("(")
        elif char == ")" and context is not None:
            self.contexts.pop()
            if context == "$(":  # the substitution goes on being part of a word
                self.word_start = False
                return
        elif char == "<":
            self._less = less + 1
        self._redirect = char in "<>"
        self.word_start = True
        if context is None:
            self._operator(char, glued=glued)


def _split_operators(run: str) -> list[str]:
    operators: list[str] = []
    while run:
        operator = next(op for op in _OPERATORS if run.startswith(op))
        operators.append(operator)
        run = run[len(operator) :]
    return operators


@attrs.define
class _Command:
    """A simple command being read by :func:`command_problem`."""

    name: str | None = None
    arguments: list[str] = attrs.Factory(list[str])
    fields: list[str] = attrs.Factory(list[str])
    condition: bool = False
    """Inside ``[[ ... ]]``, where operators are the test's."""
    wrapped: bool = False
    """After ``command`` or ``builtin``."""

    def problem(self) -> tuple[str, str] | None:
        if not self.fields or self.name is None:
            return None
        name = self.name
        reason = _EVALUATING.get(name)
        option = _EVALUATING_OPTION.get(name)
        if option is not None:
            for argument in self.arguments:
                if argument == "--" or not argument.startswith("-"):
                    break
                if option in argument[1:]:
                    reason = f"takes a variable name with -{option}, {_SUBSCRIPTS}"
        if name in {"test", "["} and _TEST_NAME_OPERATORS.intersection(self.arguments):
            reason = f"takes a variable name with -v or -R, {_SUBSCRIPTS}"
        if reason is None:
            return None
        where = "is inside [[ ... ]], which" if name == "[[" else f"is given to {name}, which"
        return self.fields[0], f"{where} {reason}"


def command_problem(tokens: Sequence[Token]) -> tuple[str, str] | None:  # noqa: C901, PLR0912
    """The first field given to a builtin that evaluates it (rule 4), and why; or None."""
    outer: list[_Command | None] = []
    command = _Command()
    redirect = False
    for index, token in enumerate(tokens):
        if token.kind == "op":
            for operator in _split_operators(token.text):
                if command.condition:
                    continue
                if operator in _REDIRECTIONS:
                    redirect = True
                    continue
                if (problem := command.problem()) is not None:
                    return problem
                if operator == "(":  # a process substitution goes on with the command
                    outer.append(command if redirect else None)
                    command = _Command()
                elif operator == ")":
                    command = (outer.pop() if outer else None) or _Command()
                else:
                    command = _Command()
                redirect = False
            continue
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        if command.condition:
            command.fields += token.fields
            if token.text == "]]" and not token.quoted:
                command.condition = False
            continue
        if redirect:  # a redirection's target: a file name
            redirect = False
            continue
        if (
            following is not None
            and following.glued
            and following.text[:1] in {"<", ">"}
            and token.text.isdigit()
        ):
            continue  # a file descriptor: 2>&1
        command.fields += token.fields
        if command.name is not None:
            command.arguments.append(token.text)
            continue
        assignment = _ASSIGNMENT.match(token.text)
        if assignment is not None:
            if _MARK in assignment.group():
                return token.fields[0], (
                    "is in the name or subscript of an assignment, which the shell evaluates"
                    " as arithmetic"
                )
            continue
        if not token.quoted and token.text in _RESERVED:
            continue
        if token.text in {"time", "-p"} and not token.quoted:
            continue
        if command.wrapped and token.text.startswith("-"):
            continue
        if token.text in _WRAPPERS:
            command.wrapped = True
            continue
        command.name = token.text
        command.condition = command.name == "[[" and not token.quoted
    return command.problem()


def _check_field_name(field: str, template: str, name: str, *, bare: bool) -> None:
    if not name.isidentifier():
        raise ConfigError(field, f"field {{{name}}} in {template!r} is not a name", FIELD_FIX)
    if not bare:
        raise ConfigError(
            field,
            f"field {{{name}}} in {template!r} has a conversion or format spec",
            "write the field bare, such as {version}: the value is substituted as it is",
        )


def _field_fix(state: ShellState) -> str:
    """What to do about a field refused in ``state``."""
    context = state.contexts[-1] if state.contexts else None
    if state.opaque is not None:
        return _OPAQUE_FIX
    if context == "#":
        return "take the field out of the comment"
    if context in {"$(", "(", "${"}:
        return _SCRIPT_FIX
    return _BARE_FIX


def template_fields(field: str, template: object) -> frozenset[str]:
    """Check one command template and return the names of the fields it uses.

    A field must be a bare name (no index, attribute, conversion or format spec:
    those would act on the quoted value and could break its quoting), and must
    stand where the module's rule allows (see the module docstring).
    """
    if not isinstance(template, str) or not template.strip():
        raise ConfigError(field, f"expected a non-empty command, got {template!r}", FIELD_FIX)
    if _TEMPLATE_CONTROL.search(template):
        raise ConfigError(
            field,
            f"{template!r} has control characters",
            "write the command with printable characters, tabs and newlines only",
        )
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
        _check_field_name(field, template, name, bare=not (spec or conversion))
        problem = state.field(name)
        if problem is not None:
            raise ConfigError(
                field, f"field {{{name}}} in {template!r} {problem}", _field_fix(state)
            )
        names.add(name)
    unterminated = state.finish()
    if unterminated is not None:
        raise ConfigError(field, f"{template!r} {unterminated}", "close every quote in the command")
    found = command_problem(state.tokens)
    if found is not None:
        name, problem = found
        raise ConfigError(field, f"field {{{name}}} in {template!r} {problem}", _SCRIPT_FIX)
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


def check_value(field: str, value: str, fix: str) -> None:
    """Refuse a value to be put into commands that holds a control character (rule 1)."""
    if CONTROL.search(value):
        raise ConfigError(
            field,
            f"{value!r} has control characters (a newline, say), which no value put into a"
            " command may hold",
            fix,
        )


def render(template: str, values: Mapping[str, str]) -> str:
    """Substitute ``values`` into ``template``, each quoted with ``shlex.quote``.

    Raises:
        KeyError: The template uses a field ``values`` lacks.
        ValueError: A value it uses holds a control character (which the
            driver's arguments are checked for already).
    """
    parts: list[str] = []
    for literal, name, _spec, _conversion in string.Formatter().parse(template):
        parts.append(literal)
        if name is not None:
            value = values[name]
            if CONTROL.search(value):
                msg = f"the value of {{{name}}} has control characters: {value!r}"
                raise ValueError(msg)
            parts.append(shlex.quote(value))
    return "".join(parts)
