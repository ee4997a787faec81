"""The README's commands as tests/readme reads them: logical lines, comments, quotes, sections."""

from __future__ import annotations

from pathlib import Path

from tests.readme.extract import commands, not_run

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

## Running on Kubernetes

```bash
# needs a Kubernetes cluster: not run by the tests
kubectl apply -k my-overlay    # a comment
kubectl -n x get hpa
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
        "kubectl apply -k my-overlay",
        "kubectl -n x get hpa",
    ]
    # the marked block's commands are still commands (registered), and say why they are not run
    assert not_run(readme) == {
        c: "needs a Kubernetes cluster" for c in ("kubectl apply -k my-overlay", "kubectl -n x get hpa")
    }
