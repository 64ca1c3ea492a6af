"""The README's commands parse against today's code, and the files the docs name or link exist."""

from __future__ import annotations

import re
import shlex

import pytest
from conftest import ROOT, run_cli

README = (ROOT / "README.md").read_text()


def _cli_commands() -> list[list[str]]:
    """Every ``python cli.py fit|validate|test|predict ...`` command in the README's code blocks."""
    lines, inside = [], False
    for line in README.splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line)
    text = "\n".join(lines).replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "python cli.py" not in line:
            continue
        args = shlex.split(line.split("python cli.py", 1)[1].split("&&")[0].split(">")[0])
        if args and args[0] in ("fit", "validate", "test", "predict") and "--model.help" not in args:
            out.append(args)
    return out


COMMANDS = _cli_commands()


def test_the_readme_has_cli_commands():
    assert len(COMMANDS) >= 10


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a)[:80])
def test_readme_command_parses(args, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the repository
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*[a for a in args if a != "--print_config"], "--print_config")
    assert exit_info.value.code in (0, None), capsys.readouterr().err[-2000:]


def test_files_named_in_readme_and_docs_exist():
    docs = ROOT / "docs" / "benchmarks.md"
    for source, text in ((ROOT, README), (docs.parent, docs.read_text())):
        for link in re.findall(r"\]\(([^)#\s]+)\)", text):
            if not link.startswith("http"):
                assert (source / link).exists(), f"broken link {link}"
    for path in set(re.findall(r"(sweeps/[\w/.-]+\.yaml|benchmarks/[\w.-]+\.(?:py|sh))", README)):
        assert (ROOT / path).exists(), f"README names {path}, which does not exist"
