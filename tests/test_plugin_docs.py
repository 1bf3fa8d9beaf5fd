"""Every Python example of docs/plugins.md runs: the blocks run in order as one module (the
plugin the page builds), in a fresh folder, with no plugin toggles from the environment."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "plugins.md"
_BLOCK = re.compile(r"^(?P<indent>[ ]*)```python\n(?P<body>.*?)^(?P=indent)```", re.DOTALL | re.MULTILINE)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line, code)`` of each fenced ```python block, dedented by its fence's indentation."""
    out = []
    for match in _BLOCK.finditer(text):
        indent = len(match.group("indent"))
        code = "".join(line[indent:] if line.strip() else "\n"
                       for line in match.group("body").splitlines(keepends=True))
        out.append((text.count("\n", 0, match.start()) + 2, code))
    return out


def test_the_block_finder_sees_indented_blocks():
    text = "x\n\n   ```python\n   a = 1\n\n   a += 1\n   ```\n```python\nb = 2\n```\n```bash\nc\n```\n"
    assert python_blocks(text) == [(4, "a = 1\n\na += 1\n"), (9, "b = 2\n")]


def test_every_documented_example_runs(tmp_path, monkeypatch):
    for name in ("BUNDLELLM_DISABLE_PLUGINS", "BUNDLELLM_STRICT_PLUGINS", "BUNDLELLM_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 10
    module = types.ModuleType("docs_plugins_example")
    module.__file__ = str(DOC)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for line, code in blocks:
        try:
            exec(compile(code, f"{DOC}:{line}", "exec"), module.__dict__)  # noqa: S102 - our own docs
        except Exception as exc:
            raise AssertionError(f"docs/plugins.md: the block at line {line} fails: "
                                 f"{type(exc).__name__}: {exc}") from exc
