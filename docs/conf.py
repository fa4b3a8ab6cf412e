"""Sphinx configuration: Markdown pages (MyST), API pages from Google-style docstrings."""

from __future__ import annotations

import importlib.metadata
import re
import sys
import typing
from typing import TYPE_CHECKING, Any, TypeVar

from sphinx.util import logging

import rolling
import rolling.events
import rolling.health
import rolling.net
import rolling.testing
import rolling.typing
import rolling.validate

if TYPE_CHECKING:
    from docutils.nodes import Element, TextElement
    from sphinx.application import Sphinx
    from sphinx.environment import BuildEnvironment
    from sphinx.util.typing import ExtensionMetadata

project = "rolling"
author = "The rolling developers"
project_copyright = "The rolling developers"
release = importlib.metadata.version("rolling")
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    # No sphinx.ext.intersphinx: the docs build offline, with no inventory to fetch.
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "examples"]
myst_enable_extensions = ["colon_fence"]

html_theme = "furo"
html_title = f"rolling {release}"

# -- API pages ---------------------------------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
python_use_unqualified_type_names = True

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_include_init_with_doc = False
napoleon_use_rtype = False

# -- Cross-references --------------------------------------------------------------------------

nitpicky = True

# Without intersphinx nothing outside this project can be linked, so references to the standard
# library and to our dependencies are left as plain text. Only such external names are listed;
# a reference to one of our own objects that does not resolve stays an error.
nitpick_ignore_regex = [
    # The standard library.
    ("py:.*", r"(asyncio|collections\.abc|enum|logging|random|selectors|typing)(\..+)?"),
    ("py:.*", r"(re|ssl|pathlib|os)(\..+)?"),
    ("py:.*", r"Path"),  # pathlib.Path, as annotated
    ("py:.*", r"(Awaitable|Callable|Hashable|Sequence)"),  # collections.abc, as annotated
    ("py:.*", r"(Enum|StrEnum)"),  # enum bases of our enums
    # Dependencies: anyio, trio, attrs.
    ("py:.*", r"(anyio|trio|attrs|attr)(\..+)?"),
]

_logger = logging.getLogger(__name__)

# Public objects live in private modules (rolling._strategy.RollingUpdate) and are documented
# where users import them from (rolling.RollingUpdate); these are the namespaces to look in.
# Each public name is documented in one of them only (rolling.Event is rolling.events.Event, and
# documented there): a reference to another resolves to that one.
_PUBLIC_NAMESPACES = {
    "rolling": rolling,
    "rolling.events": rolling.events,
    "rolling.typing": rolling.typing,
    "rolling.net": rolling.net,
    "rolling.health": rolling.health,
    "rolling.validate": rolling.validate,
    "rolling.testing": rolling.testing,
}


# Internal types that public signatures mention: RollingUpdate.resolve() and Rollout.window()
# return a ResolvedWindow, whose fields their docstrings describe. Not part of the API (so not
# exported, nor documented on their own): shown as plain text. Any other unresolved reference to
# one of our objects stays an error.
_INTERNAL_TYPES = {"rolling._strategy.ResolvedWindow", "ResolvedWindow"}


def _public_target(target: str) -> list[str]:
    """Where a reference to an object of ours may be documented, best first."""
    prefix, _, name = target.rpartition(".")
    if prefix and not prefix.startswith("rolling"):
        return []
    found = []
    # An adapter's private module (rolling.drivers.ssh._config.SSHHost): its package documents it.
    public_prefix = ".".join(part for part in prefix.split(".") if not part.startswith("_"))
    if public_prefix != prefix and public_prefix.startswith("rolling."):
        package = sys.modules.get(public_prefix)
        if name in getattr(package, "__all__", ()):
            found.append(f"{public_prefix}.{name}")
    for namespace, module in _PUBLIC_NAMESPACES.items():
        if name in getattr(module, "__all__", ()):
            found.append(f"{namespace}.{name}")
    return found


def _resolve_to_public(
    app: Sphinx, env: BuildEnvironment, node: Element, contnode: TextElement
) -> Element | None:
    """Resolve ``rolling._module.Name`` and bare ``Name`` to the public name's documentation.

    Type hints name an object by its defining module, and names imported only for type
    checking come through unqualified; both should link to where the object is documented.
    """
    if node.get("refdomain") != "py":
        return None
    domain: Any = env.get_domain("py")
    for target in _public_target(node["reftarget"]):
        if target == node["reftarget"]:
            continue
        resolved = domain.resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], target, node, contnode
        )
        if resolved is not None:
            return resolved  # type: ignore[no-any-return]
    if node["reftarget"] in _INTERNAL_TYPES:
        return contnode
    if _is_private_type_name(node["reftarget"]):
        # Private type variables and aliases (``EventT``, ``GateCheck``) have no page: plain text.
        return contnode
    return None


def _is_private_type_name(target: str) -> bool:
    """Whether ``target`` names a type variable or alias of one of our private modules."""
    module_name, _, name = target.rpartition(".")
    if module_name:
        candidates = [sys.modules.get(module_name)]
    else:  # unresolved annotations come through unqualified: look in every private module
        candidates = [
            module
            for loaded, module in sorted(sys.modules.items())
            if loaded.startswith("rolling.") and "._" in f".{loaded.split('.', 1)[1]}"
        ]
    for module in candidates:
        if module is None or "._" not in f".{module.__name__}":
            continue
        obj = getattr(module, name, None)
        if isinstance(obj, TypeVar) or typing.get_origin(obj) is not None:
            return True
    return False


# Napoleon reads the first line of an attribute or property docstring as ``type: description``
# and splits it at its first colon. Here types always come from annotations, so prose such as
# "The fewest serving instances: ``desired - max_unavailable``." must stay prose: a leading
# empty comment moves that line out of the way (napoleon only splits the first line).
_INLINE_MARKUP = re.compile(r"``.*?``|(:[\w:.+-]+:)?`[^`]*`")
_SINGLE_COLON = re.compile(r"(?<!:):(?!:)")


def _keep_attribute_colons(
    _app: Sphinx, what: str, _name: str, _obj: object, _options: object, lines: list[str]
) -> None:
    """Stop napoleon from taking the prose before a colon for the attribute's type."""
    if what in {"attribute", "data", "property"}:
        first = next((line for line in lines if line.strip()), "")
        if _SINGLE_COLON.search(_INLINE_MARKUP.sub("", first)):
            lines[:0] = ["..", ""]


def _drop_protocol_signature(
    _app: Sphinx,
    what: str,
    _name: str,
    _obj: object,
    _options: object,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str | None, str | None] | None:
    """Show ``class Driver`` rather than ``class Driver(*args, **kwargs)`` for protocols."""
    if what == "class" and signature == "(*args, **kwargs)":
        return "", return_annotation
    return None


def _check_public_names_documented(_app: Sphinx, env: BuildEnvironment) -> None:
    """Warn (an error under ``-W``) about any public name the API reference leaves out."""
    documented = set(env.get_domain("py").objects)
    for namespace, module in _PUBLIC_NAMESPACES.items():
        for name in module.__all__:
            obj = getattr(module, name)
            places = {
                f"{other}.{name}"
                for other, other_module in _PUBLIC_NAMESPACES.items()
                if getattr(other_module, name, None) is obj
            }
            if not places & documented:
                _logger.warning(
                    "%s.%s is public (in __all__) but the API reference (docs/api.md) "
                    "does not document it",
                    namespace,
                    name,
                )


def setup(app: Sphinx) -> ExtensionMetadata:
    """Hook the reference resolver and the checks in."""
    app.connect("missing-reference", _resolve_to_public)
    # Before napoleon (which listens at the default priority, 500) rewrites the docstring.
    app.connect("autodoc-process-docstring", _keep_attribute_colons, priority=400)
    app.connect("autodoc-process-signature", _drop_protocol_signature)
    app.connect("env-check-consistency", _check_public_names_documented)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
