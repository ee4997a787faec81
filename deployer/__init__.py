"""The deployer: `apinode deploy ...` and `apinode dev DIR`, over the node's admin gRPC API.

    transport.py    channels (plaintext or TLS) and one line saying why a connection failed
    client.py       AdminClient: every admin call as a typed method (the library API)
    models.py       what those calls answer, as frozen dataclasses (and JSON for --json)
    errors.py       DeployError / UsageError / Unreachable: one line and an exit code each
    packagefile.py  a package on disk: manifest, sha256, test queries
    testplay.py     plays test queries through the node's public API (gRPC or JSON HTTP)
    rollout.py      rolling deployment over the nodes of an infrastructure file
    output.py       rich tables and progress bars for people, JSON for scripts
    commands.py     one function per `deploy` action
    dev.py          the edit-compile-serve loop
    cli.py          argparse: `register(subparsers)` for `apinode`, `main` for `python -m deployer`

It imports nothing of the node but the generated stubs (`node._proto`) and the package
format reader (`apz`).
"""

import os

# gRPC core prints a failed TLS handshake on stderr at INFO level, beside the deployer's own
# one-line message; it reads this once, when grpc is imported (after this, by every module).
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
