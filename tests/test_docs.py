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
    overrides += [w.replace("file://", f"file://{ROOT}/") for w in args if w.startswith("hydra.searchpath=")]
    compose_cfg(overrides)  # an unknown group, option or key raises


# What the README's everyday commands need to run here: the stand-in, small, quiet.
SMALL = {"dataset": "jsc_synth", "dataset.n_rows": "3000", "max_epochs": "1", "trainer.progress_bar": "false"}


def _everyday() -> list[list[str]]:
    """README's "Everyday commands" block, one argument list per ``python -m`` line."""
    (block,) = [b for b in _BLOCK.findall((ROOT / "README.md").read_text()) if "# one run:" in b]
    # bash reads \` inside double quotes as a backquote; shlex keeps the backslash
    lines = [shlex.split(line.replace("\\`", "`"), comments=True) for line in block.replace("\\\n", " ").splitlines()]
    return [words[2:] for words in lines if words[:2] == ["python", "-m"]]


def _small(args: list[str], workdir) -> list[str]:
    """A jscexp command on the stand-in at test size; a placeholder checkpoint is the first run's,
    a placeholder run id the newest QAT run's."""
    if args[0] == "jscexp.export":
        from conftest import mlflow_client

        client = mlflow_client(workdir)
        (newest, *_) = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                          "tags.`jscexp.mode` = 'qat'", order_by=["attributes.start_time DESC"])
        return [a if "<" not in a else newest.info.run_id for a in args]
    if args[0] != "jscexp":
        return args
    ckpt = next(iter(sorted(workdir.glob("outputs/*/*/checkpoints/best.ckpt"))), None)
    out = [f"ckpt={ckpt}" if a.startswith("ckpt=") and "<" in a else a
           for a in args[1:] if a.split("=", 1)[0].lstrip("+") not in SMALL]
    search = ["hydra.sweeper.n_trials=2"] if any("optuna" in a for a in args) else []
    return ["jscexp", *out, *(f"{k}={v}" for k, v in SMALL.items()), *search] if "--help" not in args else args


@pytest.mark.slow
def test_readmes_everyday_commands_run_as_printed(workdir):
    """Each command of README's everyday block, in its order, on the stand-in with small data:
    a command printed wrong fails here, not on a newcomer's machine."""
    import subprocess
    import sys

    commands = _everyday()
    assert len(commands) >= 12
    for args in commands:
        small = _small(args, workdir)
        result = subprocess.run([sys.executable, "-m", *small], cwd=workdir, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{' '.join(small)}\n{result.stderr[-3000:]}"
        if args[0] == "jscexp.table" and "-o" not in args:
            assert "| " in result.stdout, ' '.join(small)
    assert (workdir / "lr.png").stat().st_size > 0 and "jsc-toy" in (workdir / "runs.csv").read_text().splitlines()[1]
