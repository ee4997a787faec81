"""A small compiled service with an endpoint of each kind the node serves without a model:
`customer` (lookup, on a bundled CSV), `echo` (function), and, with a PostgreSQL
connection name, `balance` (sql). Built by the real compiler from a service folder.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from compiler.build import compile_service

CUSTOMERS = "customer_id,age,country\nC1,34,FR\nC2,61,DE\n"


def kinds_package(
    out_dir: Path,
    *,
    version: str = "v1",
    sql_connection: str | None = None,
    api_keys: list[str] | None = None,
) -> Path:
    folder = out_dir / f"kinds-{version}"
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "code").mkdir(exist_ok=True)
    (folder / "data" / "customers.csv").write_text(CUSTOMERS)
    (folder / "code" / "funcs.py").write_text("def echo(**kwargs):\n    return {'echo': kwargs}\n")
    doc = textwrap.dedent(f"""\
        service: kinds
        version: {version}
        datasets:
          customers: data/customers.csv
        endpoints:
          customer:
            type: lookup
            dataset: customers
            keys: [customer_id]
            test_queries:
              - data: {{customer_id: C1}}
              - data: {{customer_id: C9}}
          echo:
            type: function
            file: code/funcs.py
            function: echo
            test_queries: [{{a: 1}}]
            pool: {{floor: 1, ceil: 1}}
        """)
    if sql_connection:
        doc += (
            "  balance:\n    type: sql\n"
            f"    connection: {sql_connection}\n"
            '    statements: ["SELECT :id::int + 1 AS next"]\n'
            "    test_queries: [{id: 41}]\n    pool: {floor: 1, ceil: 1}\n"
        )
    if api_keys:
        doc += "api_keys: " + json.dumps(api_keys) + "\n"
    (folder / "service.yaml").write_text(doc)
    out = out_dir / f"kinds-{version}.apz"
    compile_service(folder, out, progress=False)
    return out
