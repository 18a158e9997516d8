"""``refundcore new-plugin``: scaffold a provider plugin that installs and passes its
own tests as generated (the conformance suite included)."""

from __future__ import annotations

import re
from pathlib import Path

from .. import __version__
from ..errors import ValidationError

__all__ = ["core_requirement", "create_plugin"]

_NAME = re.compile(r"[a-z][a-z0-9_]{1,30}\Z")
_TEMPLATE = Path(__file__).parent / "template"


def core_requirement(version: str) -> str:
    """The core versions a plugin written against core ``version`` accepts: its minor
    series while the core is 0.x (a minor release may change the plugin contract), its
    major series from 1.0 on."""
    major, minor = (int(part) for part in re.findall(r"[0-9]+", version)[:2])
    if major == 0:
        return f"refundcore>=0.{minor},<0.{minor + 1}"
    return f"refundcore>={major}.{minor},<{major + 1}"


def create_plugin(name: str, directory: str | Path | None = None) -> Path:
    """Write a new plugin package for provider ``name`` into ``directory`` (default
    ``./refundcore-<name>``) and return that folder."""
    if not _NAME.match(name):
        raise ValidationError(
            "must be 2 to 31 characters: a lowercase letter, then lowercase letters, "
            "digits or underscores",
            field="name",
        )
    target = Path(directory) if directory is not None else Path(f"refundcore-{name}")
    if target.exists() and any(target.iterdir()):
        raise ValidationError(f"{str(target)!r} exists and is not empty", field="dir")
    package = f"refundcore_{name}"
    values = {
        "name": name,
        "NAME": name.upper(),
        "package": package,
        "Title": "".join(part.capitalize() for part in name.split("_")),
        "display": name.replace("_", " ").title(),
        "prefix": re.sub(r"[^A-Z]", "", name.upper())[:2] or "RC",
        "core_requirement": core_requirement(__version__),
    }
    for source in sorted(_TEMPLATE.rglob("*.tmpl")):
        relative = source.relative_to(_TEMPLATE).with_suffix("")
        destination = target / Path(*(package if p == "PACKAGE" else p for p in relative.parts))
        destination = destination.with_name(destination.name.replace("PACKAGE", name))
        text = source.read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace("{{" + key + "}}", value)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(text, encoding="utf-8")
    return target
