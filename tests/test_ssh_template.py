"""The SSH driver's command templates, alone: the shell lexer, the field checks and the quoting.

Pure functions, no SSH and no shell: :func:`shlex.split` is Python's POSIX shell word
splitter, enough to see what words a rendered command holds. (tests/test_ssh_driver.py runs
rendered commands through a real ``/bin/sh`` too.)
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rolling
from rolling.drivers.ssh._template import (
    BUILTIN_FIELDS,
    ShellState,
    check_template,
    check_value,
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
        pytest.param("echo \"'", ['"'], False, False, id="single-quote-in-double-is-literal"),
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
        ("echo `", "is inside or after a `...` command substitution (backticks)"),
        ('echo "`', "is inside or after a `...` command substitution (backticks)"),
        ("echo `x` ", "is inside or after a `...` command substitution (backticks)"),
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
        ("echo `cat {version}`", "inside or after a `...` command substitution"),
        ('echo "$(cat `echo {version}`)"', "inside or after a `...` command substitution"),
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


# Any text without control characters (which no value may hold): shell metacharacters, quotes,
# backslashes and non-ASCII included.
CONTROL: tuple[Literal["Cc"]] = ("Cc",)
VALUES = st.text(st.characters(exclude_categories=CONTROL), max_size=40)


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b", "\t", "\x1b[0m", "\x7f", "\x85"])
def test_render_refuses_values_with_control_characters(value: str) -> None:
    with pytest.raises(ValueError, match=r"\{zone\} has control characters"):
        render("install {version} --zone {zone}", {"version": "v2", "zone": value})


def test_check_value_names_the_field() -> None:
    check_value("SSHHost.name", "web-1 ÿ ünïcode $(x) 'q'", "fix")
    with pytest.raises(rolling.ConfigError, match="control characters") as caught:
        check_value("SSHHost.name", "web-1\ntouch /tmp/x", "pass an id")
    assert (caught.value.field, caught.value.fix) == ("SSHHost.name", "pass an id")


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


# -- comments, $(...) and what the lexer gives up at ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "contexts"),
    [
        pytest.param("# c", ["#"], id="comment-at-start"),
        pytest.param("echo a # c", ["#"], id="comment-after-blank"),
        pytest.param("echo a;# c", ["#"], id="comment-after-operator"),
        pytest.param("echo a|#", ["#"], id="comment-after-pipe"),
        pytest.param("echo a#b ", [], id="hash-inside-a-word"),
        pytest.param("echo 'a'#b ", [], id="hash-after-a-quote"),
        pytest.param("echo \\#b ", [], id="escaped-hash"),
        pytest.param("echo $# ", [], id="dollar-hash"),
        pytest.param("echo '#' ", [], id="hash-in-single-quotes"),
        pytest.param('echo "#" ', [], id="hash-in-double-quotes"),
        pytest.param("# it's\necho ", [], id="newline-ends-a-comment"),
        pytest.param("# a \\\necho ", [], id="no-backslash-continuation-in-comments"),
        pytest.param("# it's `$(\"\n", [], id="nothing-is-special-in-a-comment"),
        pytest.param("echo a \\\n# c", ["#"], id="comment-after-backslash-newline"),
        pytest.param('echo "$(', ['"', "$("], id="substitution-in-double-quotes"),
        pytest.param('echo "$(x "', ['"', "$(", '"'], id="double-quotes-nest-in-substitution"),
        pytest.param("echo \"$(x ')\"'", ['"', "$("], id="single-quotes-in-substitution"),
        pytest.param("echo \"$(x ')')\"", [], id="substitution-closed"),
        pytest.param('echo "$(x (y) ) ', ['"'], id="subshell-in-substitution"),
        pytest.param("echo $(x", ["$("], id="substitution-at-top"),
        pytest.param("echo ${", ["${"], id="parameter-open"),
        pytest.param("echo ${HOME} ", [], id="parameter-closed"),
        pytest.param('echo "${HOME}', ['"'], id="parameter-in-double-quotes"),
    ],
)
def test_shell_state_follows_comments_and_substitutions(text: str, contexts: list[str]) -> None:
    state = state_after(text)
    assert state.opaque is None
    assert state.contexts == contexts


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("echo `", "backticks"),
        ('echo "`x` ', "backticks"),
        ("echo $((", "arithmetic"),
        ('echo "$((1)) ', "arithmetic"),
        ("((x)) ", "arithmetic"),
        ("echo $(( x", "arithmetic"),
        ("echo $[1] ", "$[...] arithmetic"),
        ("echo ${x:-a} ", "${...} expansion other than ${name}"),
        ("echo ${#x} ", "${...} expansion other than ${name}"),
        ("cat <<EOF\n", "here-document"),
        ("cat <<-EOF\n", "here-document"),
        ("cat <<'EOF'\n", "here-document"),
        ("cat <\\\n<EOF\n", "here-document"),  # a backslash-newline joins the two <
        ("echo $'it\\'s' ", "\\' inside $'...' quotes"),
        ("echo >#x ", "<# or >#"),
        ("echo $(x # c\n) ", "comment inside $(...)"),
        ("echo $(case x in a) y;; esac) ", "case inside $(...)"),
    ],
)
def test_shell_state_gives_up_at_what_it_does_not_follow(text: str, what: str) -> None:
    state = state_after(text)
    assert state.opaque is not None
    assert what in state.opaque
    problem = state.problem()
    assert problem is not None
    assert "inside or after" in problem


@pytest.mark.parametrize(
    "text",
    [
        "cat <<< ",
        "echo $'a\\n' ",
        'echo "$(cat VERSION)" ',
        "echo $(x) ",
        "echo ${HOME} ",
        "echo $HOME$1$?$$ ",
        "echo a # it's\n",
        "echo a \\\n  ",
        "case x in a) y;; esac; ",  # case patterns at the top level are only words
        "diff <(sort a) ",
    ],
)
def test_shell_state_follows_these_exactly(text: str) -> None:
    assert state_after(text).problem() is None


# -- the audit's injections, refused -------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "field", "problem"),
    [
        pytest.param(
            "# don't restart twice\nprintf %s '{version}' > F # it's read by the probe",
            "version",
            "is inside single quotes",
            id="apostrophe-in-a-comment",
        ),
        pytest.param(
            "# don't forget: it's quoted\necho '{version}' > /dev/null",
            "version",
            "is inside single quotes",
            id="apostrophes-in-a-comment",
        ),
        pytest.param(
            "echo \"$(printf %s '\") {version} (')\" # '",
            "version",
            "is inside single quotes",
            id="single-quotes-in-a-substitution-in-double-quotes",
        ),
        pytest.param(
            "install {version} # zone {zone}",
            "zone",
            "is in a comment",
            id="field-in-a-comment",
        ),
        pytest.param(
            "[[ {version} -eq 2 ]] || true",
            "version",
            "is inside [[ ... ]]",
            id="double-bracket-arithmetic",
        ),
    ],
)
def test_audit_injections_are_refused(template: str, field: str, problem: str) -> None:
    with pytest.raises(rolling.ConfigError, match=re.escape(problem)) as caught:
        template_fields("SSHCommands.deploy", template)
    assert caught.value.field == "SSHCommands.deploy"
    assert f"field {{{field}}} in {template!r}" in str(caught.value)
    assert caught.value.fix


def test_a_substitution_in_double_quotes_is_followed_to_its_end() -> None:
    # The audit's neighbour that was right to pass: the field after it is at the top level.
    template = 'echo "$(echo "\'")" {version} # \''
    assert template_fields("SSHCommands.deploy", template) == {"version"}
    command = render(template, {"version": "v; touch /nonexistent/pwned; echo "})
    assert command.endswith("'v; touch /nonexistent/pwned; echo ' # '")


# -- builtins that evaluate their arguments ------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("[[ {version} -eq 2 ]]", "inside [[ ... ]]"),
        ("[[ -v {version} ]]", "inside [[ ... ]]"),
        ("[[ a && {version} == b ]]", "inside [[ ... ]]"),
        ("let x={version}", "given to let"),
        ("eval install {version}", "given to eval"),
        ("command eval {version}", "given to eval"),
        ("builtin eval {version}", "given to eval"),
        ("trap {version} EXIT", "given to trap"),
        ("source /srv/{version}.sh", "given to source"),
        (". /srv/{version}.sh", "given to ."),
        ("declare -i x={version}", "given to declare"),
        ("local x={version}", "given to local"),
        ("readonly x={version}", "given to readonly"),
        ("export APP_VERSION={version}", "given to export"),
        ("read {version} < f", "given to read"),
        ("mapfile {version} < f", "given to mapfile"),
        ("unset {version}", "given to unset"),
        ("getopts ab {version}", "given to getopts"),
        ("printf -v {version} %s x", "given to printf, which takes a variable name with -v"),
        ("printf -v x %s {version}", "given to printf, which takes a variable name with -v"),
        ("wait -p x {port}", "given to wait, which takes a variable name with -p"),
        ("[ -v {version} ]", "given to [, which takes a variable name with -v"),
        ("test -R {version}", "given to test, which takes a variable name with -v"),
        ("a[{version}]=1 run", "name or subscript of an assignment"),
        ("cd /srv && ! declare {version}", "given to declare"),
        ("x=1 read {version}", "given to read"),
        ("time -p eval {version}", "given to eval"),
        ("( eval {version} )", "given to eval"),
        ("f() {{ eval {version}; }}", "given to eval"),
        ("eval <(cat a) {version}", "given to eval"),
        ("if true; then eval {version}; fi", "given to eval"),
    ],
)
def test_fields_given_to_evaluating_builtins_are_refused(template: str, problem: str) -> None:
    with pytest.raises(rolling.ConfigError, match=re.escape(problem)) as caught:
        template_fields("SSHCommands.start", template)
    assert caught.value.field == "SSHCommands.start"
    assert "/srv/app/install {version}" in caught.value.fix


@pytest.mark.parametrize(
    "template",
    [
        "printf %s {version} > VERSION",
        "APP_VERSION={version} /srv/app/install",
        "[ -f /srv/{version}.tar ] || fetch {version}",
        "test {version} = v2",
        "[[ -f x ]] && install {version}",
        "echo eval let declare {version}",  # the builtins' names as arguments only
        "printf '%s\\n' {version} -v",
        "install {version} 2>&1 | tee -a log",
        "diff <(cat a) {version}",
        "case {version} in *-rc*) echo rc;; *) install {version};; esac",
        "for v in {version} {id}; do echo $v; done",
        "sudo /srv/app/bin/install {version} && printf %s {version} > /srv/app/VERSION",
        (  # tests/netns_hosts.py's stop
            'cd {dir} && if [ -f app.pid ]; then pid=$(cat app.pid); kill "$pid" 2>/dev/null;'
            ' while ps -o stat= -p "$pid" | grep -qv Z; do sleep 0.05; done; rm -f app.pid; fi'
        ),
        (  # tests/test_e2e_haproxy_ssh.py's start
            "cd {dir} && case {version} in *-broken) ready=--never-ready;; *) ready=;; esac"
            " && {{ setsid nohup {python} -m rolling.demo.app"
            ' --version "$(cat VERSION)" --port {port} --host {host}'
            " --startup-delay 0.2 --latency-ms 5 $ready"
            " </dev/null >>app.log 2>&1 & echo $! > app.pid; }}"
        ),
    ],
)
def test_documented_and_tested_templates_are_accepted(template: str) -> None:
    template_fields("SSHCommands.start", template)


def test_templates_with_control_characters_are_refused() -> None:
    template_fields("SSHCommands.deploy", "install\t{version}\n  && true")  # tab and newline: fine
    with pytest.raises(rolling.ConfigError, match="has control characters"):
        template_fields("SSHCommands.deploy", "install {version}\r\n")


# -- properties ----------------------------------------------------------------------------------

SENTINELS = ("Qsentinel0Q", "Qsentinel1Q")


def words(command: str) -> list[str]:
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    return list(lexer)


# Pieces of templates that shlex reads as a POSIX shell does: no $, backticks or comments.
SHLEX_PIECES = st.sampled_from(
    [
        *[" ", "\t", "\n", "a", "echo", "x=", "'", '"', "\\", ";", "&&", "|", "<", ">", "(", ")"],
        *["{version}", "{zone}", "'a b'", '"c d"'],
    ]
)


@given(pieces=st.lists(SHLEX_PIECES, max_size=14), version=VALUES, zone=VALUES)
def test_an_accepted_template_keeps_every_value_inside_one_word(
    pieces: list[str], version: str, zone: str
) -> None:
    template = "true " + "".join(pieces)
    try:
        template_fields("SSHCommands.deploy", template)
    except rolling.ConfigError:
        return  # refused: fine
    plain = render(template, dict(zip(("version", "zone"), SENTINELS, strict=True)))
    try:
        expected = words(plain)
    except ValueError:
        return  # shlex's own limits (a trailing backslash)
    values = {"version": version, "zone": zone}
    found = words(render(template, values))
    for sentinel, value in zip(SENTINELS, values.values(), strict=True):
        expected = [word.replace(sentinel, value) for word in expected]
    assert found == expected


# Valid shell commands for bash itself, whose fields may land anywhere: in single or double
# quotes, in $(...) (nested), in comments, or in words; with stray quotes, parentheses and
# hashes where they are literal (an apostrophe in a comment, a ")" in quotes), which put the
# lexer to the test.
SPOT = "\x01"
"""Where a field may go; bash_templates puts one or two fields in, "a" in the others."""
FIELDS = st.just(SPOT)


def pieces(*literals: str, more: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[str]:
    piece = st.sampled_from([*literals, SPOT])
    if more is not None:
        piece |= more
    return st.lists(piece, max_size=5).map("".join)


def substitution(commands: list[str]) -> str:
    return f"$({'; '.join(commands)})"


def command_line(comment: str, command: str, separator: str) -> str:
    return comment + command + separator


SCRIPTS: st.SearchStrategy[str] = st.deferred(
    lambda: st.lists(COMMANDS, min_size=1, max_size=3).map("\n".join)
)
# No comments inside $(...): the lexer gives up at them, which would hide what comes after.
SUBSTITUTIONS: st.SearchStrategy[str] = st.deferred(
    lambda: st.lists(PLAIN_COMMANDS, min_size=1, max_size=2).map(substitution)
)
SINGLE = pieces("a", " ", '"', "#", ")", "(", "`", "$(", "\\", ";", "$").map(lambda t: f"'{t}'")
DOUBLE = pieces("a", " ", "'", "#", ")", "(", '\\"', "\\`", "\\$", ";", more=SUBSTITUTIONS).map(
    lambda t: f'"{t}"'
)
COMMENTS = pieces("a", " ", "a", " ", "'", '"', "`", "$(", ")", "\\").map(lambda t: f"# {t}\n")
WORDS = st.lists(
    st.sampled_from(["a", "x=", "\\'", '\\"', "\\#", "a#", "$x"])
    | FIELDS
    | SINGLE
    | DOUBLE
    | SUBSTITUTIONS,
    min_size=1,
    max_size=3,
).map("".join)
PLAIN_COMMANDS: st.SearchStrategy[str] = st.lists(WORDS, max_size=3).map(
    lambda words: "echo " + " ".join(words)
)
COMMANDS: st.SearchStrategy[str] = st.builds(
    command_line,
    st.just("") | COMMENTS,
    PLAIN_COMMANDS,
    st.sampled_from(["", "", ";", " # it's", " #)", " # a"]),
)


@st.composite
def bash_templates(draw: st.DrawFn) -> str:
    *parts, last = draw(SCRIPTS).split(SPOT)
    if not parts:
        return last
    chosen = draw(st.sets(st.integers(0, len(parts) - 1), min_size=1, max_size=2))
    names = iter(["{version}", "{zone}"])
    return (
        "".join(
            part + (next(names) if index in chosen else "a") for index, part in enumerate(parts)
        )
        + last
    )


BASH_TEMPLATES = bash_templates()


BASH = shutil.which("bash")

# Values that, read as code anywhere (unquoted, in single or double quotes, in a substitution,
# in arithmetic), run the builtin ":" to create a file named pwned*.
CANARIES = st.sampled_from(
    [
        "v2; :>pwned1 #",
        "v2'; :>pwned2; echo '",
        'v2"; :>pwned3; echo "',
        "$(:>pwned4)",
        "`:>pwned5`",
        "a[$(:>pwned6)]",
        "v2\\'; :>pwned7 #",
        "x ') ; :>pwned8 ; (' ",
        "\"$(:>pwned9)\" '$(:>pwned10)' ${x:=$(:>pwned11)}",
    ]
)


@settings(max_examples=150, deadline=None)
@given(template=BASH_TEMPLATES, version=CANARIES, zone=CANARIES)
def test_bash_runs_no_value_of_an_accepted_template(template: str, version: str, zone: str) -> None:
    # Runs the rendered command for real, in an empty directory with no PATH: only builtins run,
    # and the templates' words are harmless ones. Bash is part of every machine CI runs on.
    assert BASH is not None, "bash is needed: apt-get install bash"
    try:
        template_fields("SSHCommands.deploy", template)
    except rolling.ConfigError:
        return
    assert BASH is not None
    command = render(template, {"version": version, "zone": zone})
    with tempfile.TemporaryDirectory() as scratch:
        result = subprocess.run(  # noqa: S603 - the point: bash runs what render made
            [BASH, "--norc", "--noprofile", "-c", command],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            cwd=scratch,
            env={"PATH": "/nonexistent", "HOME": scratch, "LC_ALL": "C.UTF-8"},
            check=False,
            timeout=10,
        )
        assert not [p.name for p in Path(scratch).iterdir() if p.name.startswith("pwned")]
    assert result.returncode == 0, result.stderr  # the commands are valid: they ran


@given(template=st.text(max_size=60))
def test_any_template_is_accepted_or_refused_with_a_config_error(template: str) -> None:
    refused: rolling.ConfigError | None = None
    try:
        template_fields("SSHCommands.deploy", template)
    except rolling.ConfigError as exc:
        refused = exc
    assert refused is None or refused.field == "SSHCommands.deploy"
