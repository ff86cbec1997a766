"""Reading files out of a model's reply (the format the dev and fix prompts ask for).

The format: each file is a line `File: <relative/path>` followed by one fenced code block
holding the file's whole content. Prose around the blocks is ignored, and so is light
markdown on the File line (`### File: calc.py`, `**File:** `calc.py``):

    Adds the calculator and its tests.

    File: calc.py
    ```python
    def add(a, b):
        return a + b
    ```

Fences may be ``` or ~~~, longer ones (````) to hold a file that itself contains ```.
When a reply has no such block, a JSON object `{"files": {"<path>": "<content>"}}` is
accepted instead, bare or in a fenced block.
"""

from __future__ import annotations

import json
import re

__all__ = ["FORMAT_INSTRUCTIONS", "parse_files"]

FORMAT_INSTRUCTIONS = """\
Answer with every file you write or change, in full, in this format: a line
`File: <path relative to the project root>`, then one fenced code block with the
file's complete content. One short line of explanation may come first. Example:

File: pkg/module.py
```python
def answer() -> int:
    return 42
```
"""

_FILE_LINE = re.compile(
    r"^[ \t]*(?:[#>*\-][ \t]*)*(?:\*\*)?(?:file(?:name)?|path)[ \t]*:(?:\*\*)?[ \t]*"
    r"(?:\*\*)?`?(?P<path>[^`*\s]+)`?(?:\*\*)?[ \t]*:?[ \t]*$",
    re.IGNORECASE,
)
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


def parse_files(reply: str) -> dict[str, str]:
    """{path: content} from `reply`, in order of appearance (a repeated path: the last
    block wins); {} when the reply holds no file."""
    files: dict[str, str] = {}
    fenced: list[str] = []
    path: str | None = None
    lines = reply.splitlines()
    i = 0
    while i < len(lines):
        named = _FILE_LINE.match(lines[i])
        opening = None if named else _FENCE.match(lines[i])
        if named:
            path = named["path"]
        elif opening:
            body, i = _block(lines, i, opening)
            if path is not None:
                files[path] = body
                path = None
            else:
                fenced.append(body)
        i += 1
    return files or _json_files([reply.strip(), *fenced])


def _block(lines: list[str], start: int, opening: re.Match[str]) -> tuple[str, int]:
    """The content of the block opened at lines[start], and the index of its closing
    fence (or the last line, when the reply was cut off inside the block)."""
    indent, fence = opening["indent"], opening["fence"]
    closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
    body: list[str] = []
    end = start + 1
    while end < len(lines) and not closing.match(lines[end]):
        line = lines[end]
        body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
        end += 1
    return ("\n".join(body) + "\n" if body else ""), end


def _json_files(candidates: list[str]) -> dict[str, str]:
    for text in candidates:
        if not text.startswith("{"):
            continue
        try:
            data = json.loads(text)
        except ValueError:
            continue
        files = data.get("files") if isinstance(data, dict) else None
        if isinstance(files, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()
        ):
            return dict(files)
    return {}
