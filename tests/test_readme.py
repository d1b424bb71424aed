"""The README's library example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 1
    code = blocks[0].replace("/tmp/overparam-example", str(tmp_path / "example"))
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README

    model = namespace["model"]
    assert len(namespace["names"]) == 8
    assert (tmp_path / "example" / "config.json").is_file()
    assert not any(type(m).__name__ == "DecomposedLinear" for m in model.modules())
