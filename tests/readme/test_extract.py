"""The README's commands as tests/readme reads them: logical lines, comments, quotes, sections."""

from __future__ import annotations

from pathlib import Path

from tests.readme.extract import commands

README = """\
# title

```
make test    # not a section a user runs commands from
```

## Quick start

```
make run    # trains, compiles, serves
# {"an": "answer"}   (what a command prints)

curl -s http://x/a \\
  -d '{"text": "a # inside quotes", "n": 1}'
curl -s x -d '{"inputs": [1,
  2]}'
```

```python
import os
os.getcwd()   # a comment stays in a snippet
```

```yaml
nodes: []
```

## Other

```bash
apinode serve
```
"""


def test_commands_are_logical_lines_of_the_chosen_sections(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert commands(readme) == [
        "make run",
        """curl -s http://x/a -d '{"text": "a # inside quotes", "n": 1}'""",
        """curl -s x -d '{"inputs": [1,\n  2]}'""",
        "import os\nos.getcwd()   # a comment stays in a snippet",
    ]
