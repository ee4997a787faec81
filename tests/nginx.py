"""A private nginx for the tests: Debian's `nginx` (installed by tests/setup_services.sh),
serving a temporary directory over HTTP with its WebDAV module taking PUT, as a package
repository behind nginx would; on a free loopback port, its config and logs in the same
temporary directory. One foreground process (`master_process off`), stopped by its pid.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

NGINX = "/usr/sbin/nginx"

_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    client_max_body_size 0;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
        location / {{
            {auth}
            dav_methods PUT DELETE;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
        }}
    }}
}}
"""


@dataclass
class Nginx:
    root: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def www(self) -> Path:
        return self.root / "www"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_nginx(users: dict[str, str] | None = None) -> Nginx:
    """`users`: name -> password; when given, every request needs HTTP Basic authorization."""
    if not Path(NGINX).exists():
        raise RuntimeError("nginx is not installed: run `bash tests/setup_services.sh` (make test does)")
    root = Path(tempfile.mkdtemp(prefix="apinode-nginx-"))
    (root / "www").mkdir()
    (root / "tmp").mkdir()
    port = _free_port()
    conf = root / "nginx.conf"
    auth = ""
    if users:
        lines = []
        for name, password in users.items():
            digest = subprocess.run(
                ["openssl", "passwd", "-apr1", password], capture_output=True, text=True, check=True
            ).stdout.strip()
            lines.append(f"{name}:{digest}\n")
        (root / "htpasswd").write_text("".join(lines))
        auth = f'auth_basic "repository"; auth_basic_user_file {root}/htpasswd;'
    conf.write_text(_CONF.format(root=root, port=port, auth=auth))
    log = open(root / "stderr.log", "wb")
    proc = subprocess.Popen([NGINX, "-p", str(root), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    server = Nginx(root, port, proc)
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(server.url, timeout=2)  # any answer (401 included): it listens
            return server
        except requests.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                text = (root / "stderr.log").read_text() + (root / "error.log").read_text()
                server.stop()
                raise RuntimeError(f"nginx did not start: {text}") from None
            time.sleep(0.05)
