"""The SSH driver's command templates, alone: the shell lexer, the field checks and the quoting.

Pure functions, no SSH and no shell: :func:`shlex.split` is Python's POSIX shell word
splitter, enough to see what words a rendered command holds. (tests/test_ssh_driver.py runs
rendered commands through a real ``/bin/sh`` too.)
"""

from __future__ import annotations

import re
import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

import rolling
from rolling.drivers.ssh._template import (
    BUILTIN_FIELDS,
    ShellState,
    check_template,
    render,
    template_fields,
)


def state_after(text: str) -> ShellState:
    state = ShellState()
    state.feed(text)
    return state


# -- the lexer -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "contexts", "escaped", "dollar"),
    [
        pytest.param("echo ", [], False, False, id="plain"),
        pytest.param("echo '", ["'"], False, False, id="single-open"),
        pytest.param("echo 'a b'", [], False, False, id="single-closed"),
        pytest.param("echo '\\", ["'"], False, False, id="backslash-literal-in-single"),
        pytest.param("echo '\"`$", ["'"], False, False, id="nothing-special-in-single"),
        pytest.param('echo "', ['"'], False, False, id="double-open"),
        pytest.param('echo "a\\"b', ['"'], False, False, id="escaped-quote-in-double"),
        pytest.param('echo "a\\"b"', [], False, False, id="double-closed-after-escape"),
        pytest.param('echo "`', ['"', "`"], False, False, id="backtick-in-double"),
        pytest.param('echo "`x`', ['"'], False, False, id="backtick-in-double-closed"),
        pytest.param("echo \"'", ['"'], False, False, id="single-quote-in-double-is-literal"),
        pytest.param("echo `", ["`"], False, False, id="backtick-open"),
        pytest.param("echo $'", ["$'"], False, False, id="ansi-c-open"),
        pytest.param("echo $'a'", [], False, False, id="ansi-c-closed"),
        pytest.param("echo \\$'", ["'"], False, False, id="escaped-dollar-then-plain-single"),
        pytest.param("echo \\'", [], False, False, id="escaped-single"),
        pytest.param("echo \\", [], True, False, id="trailing-backslash"),
        pytest.param("echo \\\\", [], False, False, id="escaped-backslash"),
        pytest.param("echo $", [], False, True, id="trailing-dollar"),
        pytest.param("echo $x", [], False, False, id="dollar-then-name"),
        pytest.param("echo \\$", [], False, False, id="escaped-dollar"),
    ],
)
def test_shell_state_tracks_quotes_escapes_and_dollars(
    text: str, contexts: list[str], escaped: bool, dollar: bool
) -> None:
    state = state_after(text)
    assert (state.contexts, state.escaped, state.dollar) == (contexts, escaped, dollar)
    assert state.seen == text


def test_shell_state_feeds_in_pieces_like_at_once() -> None:
    text = "a 'b' \"c `d` \\\" e\" $'f' \\g $"
    whole = state_after(text)
    pieces = ShellState()
    for char in text:
        pieces.feed(char)
    assert pieces == whole


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("echo '", "is inside single quotes"),
        ('echo "', "is inside double quotes"),
        ("echo $'", "is inside $'...' quotes"),
        ("echo `", "is inside backticks"),
        ('echo "`', "is inside backticks"),
        ("echo \\", "follows a backslash"),
        ("echo $", "follows a $"),
        ("cat <<EOF\n", "here-document"),
        ("cat <<-EOF\n", "here-document"),
    ],
)
def test_shell_state_says_why_a_field_cannot_stand_there(text: str, problem: str) -> None:
    found = state_after(text).problem()
    assert found is not None
    assert problem in found


@pytest.mark.parametrize(
    "text",
    ["", "echo ", "echo 'a' ", 'echo "a" ', "echo $'a' ", "cat <<<", "x=1 && ", "echo \\\\"],
)
def test_shell_state_lets_a_field_stand_as_a_bare_word(text: str) -> None:
    assert state_after(text).problem() is None


# -- template checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "fields"),
    [
        ("true", set[str]()),
        ("install {version}", {"version"}),
        ("deploy {version} --id {id} --host {host}:{port}", {"version", "id", "host", "port"}),
        ("echo 'literal' {version} \"$HOME\"", {"version"}),
        ("echo {{version}} {zone}", {"zone"}),  # {{ and }} are literal braces
        ("cat <<< {version}", {"version"}),  # a here-string's word is one quoted word
        ("printf %s {version} > VERSION && echo $'done' {id}", {"version", "id"}),
    ],
)
def test_template_fields_names_every_field(template: str, fields: set[str]) -> None:
    assert template_fields("SSHCommands.deploy", template) == frozenset(fields)


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("echo '{version}'", "inside single quotes"),
        ('echo "{version}"', "inside double quotes"),
        ('echo "a" "{version}"', "inside double quotes"),
        ("echo $'{version}'", "inside $'...' quotes"),
        ("echo `cat {version}`", "inside backticks"),
        ('echo "$(cat `echo {version}`)"', "inside backticks"),
        ("echo \\{version}", "follows a backslash"),
        ("echo ${version}", "follows a $"),
        ("cat <<EOF\n{version}\nEOF", "here-document"),
        ("cat <<EOF\nx\nEOF\necho {version}", "here-document"),  # refused even after the body
        ("echo {version!r}", "conversion or format spec"),
        ("echo {version:>10}", "conversion or format spec"),
        ("echo {0}", "is not a name"),
        ("echo {}", "is not a name"),
        ("echo {version[0]}", "is not a name"),
        ("echo {version.upper}", "is not a name"),
        ("echo {version", "not a valid template"),
        ("echo }", "not a valid template"),
        ("echo 'open", "unterminated ' quote"),
        ('echo "open', 'unterminated " quote'),
        ("", "non-empty command"),
        ("  \n", "non-empty command"),
    ],
)
def test_template_fields_refuses_what_could_break_quoting(template: str, problem: str) -> None:
    with pytest.raises(rolling.ConfigError, match=re.escape(problem)) as caught:
        template_fields("SSHCommands.start", template)
    assert caught.value.field == "SSHCommands.start"
    assert caught.value.fix  # every refusal says what to do instead


@pytest.mark.parametrize("value", [None, 3, b"install {version}", ["install"]])
def test_template_fields_refuses_what_is_not_a_string(value: object) -> None:
    with pytest.raises(rolling.ConfigError, match="expected a non-empty command"):
        template_fields("SSHCommands.deploy", value)


def test_check_template_keeps_version_out_of_the_probe() -> None:
    check_template("SSHCommands.deploy", "install {version}")
    check_template("SSHCommands.probe", "cat VERSION", probe=True)
    with pytest.raises(rolling.ConfigError, match="probe is there to find out") as caught:
        check_template("SSHCommands.probe", "cat {version}", probe=True)
    assert caught.value.field == "SSHCommands.probe"


def test_check_template_accepts_none_only_when_optional() -> None:
    check_template("SSHCommands.stop", None, optional=True)
    with pytest.raises(rolling.ConfigError, match="expected a non-empty command"):
        check_template("SSHCommands.deploy", None)


def test_builtin_fields_are_the_ones_every_host_has() -> None:
    assert frozenset({"version", "id", "host", "port"}) == BUILTIN_FIELDS


# -- rendering -----------------------------------------------------------------------------------


def test_render_quotes_each_value_and_keeps_literal_text() -> None:
    command = render(
        "deploy {version} --zone {zone} {{x}}", {"version": "v 2; rm -rf /", "zone": "a"}
    )
    assert command == "deploy 'v 2; rm -rf /' --zone a {x}"


def test_render_keeps_an_empty_value_as_one_empty_word() -> None:
    assert shlex.split(render("set-port {port} now", {"port": ""})) == ["set-port", "", "now"]


def test_render_needs_every_field() -> None:
    with pytest.raises(KeyError, match="zone"):
        render("deploy {zone}", {"version": "v2"})


# Any text at all, shell metacharacters, quotes, newlines and non-ASCII included (but no NUL,
# which no shell word can hold).
VALUES = st.text(st.characters(exclude_characters="\x00"), max_size=40)


@given(version=VALUES, label=VALUES)
def test_every_rendered_value_is_exactly_one_shell_word(version: str, label: str) -> None:
    command = render(
        "printf %s {version} > VERSION && tag {zone}", {"version": version, "zone": label}
    )
    assert shlex.split(command) == ["printf", "%s", version, ">", "VERSION", "&&", "tag", label]


@given(value=VALUES)
def test_accepted_templates_render_to_the_value_in_its_own_word(value: str) -> None:
    # Each of these passes the checks; the value must come out as one word of its own.
    for template, words in [
        ("echo 'a b' {version}", ["echo", "a b", value]),
        ('echo "x y" {version}', ["echo", "x y", value]),
        ("echo {version} 'tail'", ["echo", value, "tail"]),
    ]:
        template_fields("SSHCommands.deploy", template)
        assert shlex.split(render(template, {"version": value})) == words
