"""The README's Python examples run as written, its `tripletkit` command lines parse, and its two
commands exist in the Makefile."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_python_examples_run():
    blocks = _python_blocks()
    assert blocks, "the README has no Python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "readme"})


def test_readme_commands_are_make_targets():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in README
        assert re.search(rf"^{target}:", makefile, flags=re.M), target
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_has_no_unfilled_placeholders():
    assert not re.findall(r"\b[A-Z]+_(?:TABLE|SECTION)\b", README)


def _readme_commands() -> list[str]:
    """Every ``tripletkit ...`` line of the README's bash examples (continuations joined,
    comments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("tripletkit "):
                commands.append(line)
    return commands


def test_readme_command_lines_parse():
    import shlex

    from tripletkit.cli import build_parser

    commands = _readme_commands()
    assert any(c.startswith("tripletkit train-pairs") for c in commands)
    for line in commands:
        try:
            build_parser().parse_args(shlex.split(line)[1:])
        except SystemExit as exit_:  # argparse's way of refusing a flag or a missing argument
            raise AssertionError(f"the README's {line!r} does not parse") from exit_
