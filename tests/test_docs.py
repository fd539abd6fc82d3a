"""The commands README.md and docs/*.md show stay true: every ``python -m jscexp …`` in their
shell blocks composes (its groups, options and knobs exist; a sweep's first point stands for
it) and every ``python -m jscexp.table …`` parses."""

from __future__ import annotations

import re
import shlex

import pytest

from conftest import ROOT, compose_cfg

_BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
_SWEEP_FUNCTION = re.compile(r"^(choice|interval|range|tag|glob|int|float)\(")


def _commands() -> list[tuple[str, list[str]]]:
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in _BLOCK.findall(page.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                if words[:2] == ["python", "-m"] and words[2] in ("jscexp", "jscexp.table"):
                    found.append((f"{page.name}: {line.strip()[:80]}", words[2:]))
    return found


def _first_point(word: str) -> str | None:
    """A sweep override as its first value; None for a search space or a placeholder."""
    key, _, value = word.partition("=")
    if word.startswith(("[", "hydra.", "hydra/")) or "<" in word or _SWEEP_FUNCTION.match(value):
        return None
    return f"{key}={value.split(',')[0]}" if "," in value and not value.startswith(("'", '"', "[", "{")) else word


COMMANDS = _commands()


def test_the_pages_show_commands():
    assert len([c for c in COMMANDS if c[1][0] == "jscexp"]) >= 25 and any(c[1][0] == "jscexp.table" for c in COMMANDS)


@pytest.mark.parametrize("where, words", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_shown_command_composes(where, words):
    program, args = words[0], words[1:]
    if program == "jscexp.table":
        from jscexp.table import parser

        parser().parse_args(args)
        return
    if "--help" in args:
        return
    overrides = [p for p in (_first_point(w) for w in args if w != "-m") if p is not None]
    compose_cfg(overrides)  # an unknown group, option or key raises
