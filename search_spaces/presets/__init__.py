"""Named study specs shipped with the package (YAML files beside this module).

`prunetune presets` lists them (:func:`list_presets`); `prunetune show NAME` prints one
(:func:`preset_text`), comments included, to copy and edit.
"""

from __future__ import annotations

from importlib import resources

from trainables.errors import UserError


def _scan() -> tuple[str, ...]:
    files = resources.files(__name__).iterdir()
    return tuple(sorted(f.name[: -len(".yaml")] for f in files if f.name.endswith(".yaml")))


PRESETS: tuple[str, ...] = _scan()


def list_presets() -> tuple[str, ...]:
    """The preset names, sorted."""
    return PRESETS


def preset_text(name: str) -> str:
    """The YAML text of one preset, as shipped (comments included)."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return resources.files(__name__).joinpath(f"{name}.yaml").read_text()


def preset_description(name: str) -> str:
    """The preset's one-line description: the first comment line of its YAML."""
    for line in preset_text(name).splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""
