"""The app as production serves it: `coalition serve` (uvicorn) in a subprocess with its
connection limits, and nginx in front of it with the sample configuration
(deploy/nginx.conf).

uvicorn closes an idle keep-alive connection after COALITION_KEEPALIVE_SECONDS and
answers 503 past COALITION_MAX_CONCURRENCY connections, but has no header-read timeout:
the nginx tests prove the sample configuration is valid (`nginx -t`), passes requests
through over TLS with a client address nobody can forge, refuses oversized bodies, keeps
codes and query strings out of its access log, and cuts off a client that sends its
headers too slowly. They skip, saying why, where nginx is not installed (`make test`
installs Debian's package when it runs as root with apt-get)."""

from __future__ import annotations

import getpass
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from coalition import clock
from coalition.db import DatabaseUrl
from tests.live import free_port

NGINX_CONF = Path(__file__).parent.parent / "deploy" / "nginx.conf"


@dataclass
class Served:
    """`coalition serve` in a subprocess; its output (the access log) goes to `log`."""

    url: str
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def coalition_serve(database_url: DatabaseUrl, folder: Path, **settings: str
                    ) -> Iterator[Served]:
    """Run `coalition serve --access-log` as an operator would, with extra COALITION_*
    settings, until it answers /health."""
    port = free_port()
    log = folder / f"serve-{port}.log"
    env = {**os.environ, "COALITION_DATABASE_URL": database_url.raw,
           "COALITION_DATA_DIR": str(folder / "data"), "COALITION_LOG_LEVEL": "INFO",
           **{f"COALITION_{name.upper()}": value for name, value in settings.items()}}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "web", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--access-log"], env=env, stdout=out, stderr=subprocess.STDOUT)
    served = Served(f"http://127.0.0.1:{port}", port, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"coalition serve exited:\n{served.output()}")
            try:
                if httpx.get(f"{served.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"coalition serve did not answer:\n{served.output()}")
            time.sleep(0.2)
        yield served
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def read_response(conn: socket.socket) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length: its status and body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"the connection closed mid-response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in lines[1:]
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, "the connection closed mid-body"
        body += chunk
    return int(lines[0].split()[1]), body


def get_health(conn: socket.socket) -> int:
    conn.sendall(b"GET /health HTTP/1.1\r\nHost: coalition.test\r\n\r\n")
    return read_response(conn)[0]


@pytest.fixture(scope="module")
def limited_app(database_url: DatabaseUrl, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[Served]:
    """The app served with a keep-alive timeout of 1 s and room for 3 connections."""
    with coalition_serve(database_url, tmp_path_factory.mktemp("limited"),
                         keepalive_seconds="1", max_concurrency="3") as served:
        yield served


def test_an_idle_keep_alive_connection_is_closed_after_the_setting(limited_app):
    # uvicorn's own default is 5 s: without the setting passed on, this waits 5 s.
    with socket.create_connection(("127.0.0.1", limited_app.port), timeout=10) as conn:
        assert get_health(conn) == 200
        assert get_health(conn) == 200          # kept alive between requests
        idle_since = time.monotonic()
        try:
            closed = conn.recv(1) == b""
        except ConnectionResetError:
            closed = True
        idle = time.monotonic() - idle_since
    assert closed
    assert 0.5 < idle < 3.5, idle


def test_past_the_concurrency_limit_the_server_answers_503(limited_app):
    address = ("127.0.0.1", limited_app.port)
    # Two connections that send nothing: uvicorn counts them, and keeps them open.
    held = [socket.create_connection(address, timeout=10) for _ in range(2)]
    try:
        time.sleep(0.3)
        with socket.create_connection(address, timeout=10) as third:
            assert get_health(third) == 503
    finally:
        for conn in held:
            conn.close()
    deadline = time.monotonic() + 5
    while True:
        with socket.create_connection(address, timeout=10) as conn:
            status = get_health(conn)
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert status == 200
    assert "Exceeded concurrency limit" in limited_app.output()


def test_the_access_log_of_coalition_serve_holds_no_code_or_card_number(limited_app):
    # uvicorn's own logging configuration, as `serve --access-log` runs it in production.
    code, card = f"V{uuid.uuid4().hex[:15].upper()}", "4006123412341234"
    answer = httpx.get(f"{limited_app.url}/api/v1/vouchers/{code}",
                       params={"card_number": card}, timeout=10)
    assert answer.status_code == 401
    output = limited_app.output()
    assert code not in output and card not in output
    assert '"GET /api/v1/vouchers/[redacted]?card_number=[redacted] HTTP/1.1" 401' in output


# nginx


def nginx_binary() -> str | None:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    return found if os.access(found, os.X_OK) else None


def nginx_missing_reason() -> str | None:
    if nginx_binary() is None:
        return ("nginx is not installed: `make test` installs Debian's 'nginx' package when "
                "run as root with apt-get; otherwise install it to check deploy/nginx.conf")
    return None


needs_nginx = pytest.mark.skipif(nginx_missing_reason() is not None,
                                 reason=nginx_missing_reason() or "")


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A throw-away certificate for 127.0.0.1 in place of the configuration's placeholders."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "coalition.example.com")])
    now = clock.now()
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256()))
    cert, private = folder / "fullchain.pem", folder / "privkey.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert, private


def replace_once(text: str, old: str, new: str) -> str:
    """Each adjustment must match exactly once, so a change to the sample that the test
    no longer follows fails here instead of testing something else."""
    assert text.count(old) == 1, f"deploy/nginx.conf no longer holds {old!r} exactly once"
    return text.replace(old, new)


@dataclass
class Proxy:
    prefix: Path
    conf: Path
    http_port: int
    tls_port: int

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}"

    def access_log(self) -> str:
        return (self.prefix / "access.log").read_text(errors="replace")


def prepare_proxy(prefix: Path, app_port: int, header_timeout: str | None = None) -> Proxy:
    """deploy/nginx.conf with only what ties it to a machine changed: the listen ports
    (free loopback ones), the app's address, the certificate (self-signed), the user, and
    the pid, log and temporary paths (under `prefix`). `header_timeout` shortens
    client_header_timeout so that cutting off a slow client takes a second."""
    proxy = Proxy(prefix, prefix / "nginx.conf", free_port(), free_port())
    cert, key = self_signed_certificate(prefix)
    text = NGINX_CONF.read_text()
    for old, new in (
            ("user www-data;", f"user {getpass.getuser()};"),
            ("pid /run/nginx.pid;", f"pid {prefix}/nginx.pid;"),
            ("error_log /var/log/nginx/error.log warn;", f"error_log {prefix}/error.log warn;"),
            ("access_log /var/log/nginx/coalition-access.log coalition;",
             f"access_log {prefix}/access.log coalition;"),
            ("server 127.0.0.1:8000;", f"server 127.0.0.1:{app_port};"),
            ("listen 80;", f"listen 127.0.0.1:{proxy.http_port};"),
            ("listen 443 ssl;", f"listen 127.0.0.1:{proxy.tls_port} ssl;"),
            ("ssl_certificate /etc/ssl/coalition/fullchain.pem;", f"ssl_certificate {cert};"),
            ("ssl_certificate_key /etc/ssl/coalition/privkey.pem;",
             f"ssl_certificate_key {key};"),
            ("http {\n", "http {\n" + "".join(
                f"    {kind}_temp_path {prefix}/{kind};\n"
                for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")))):
        text = replace_once(text, old, new)
    if header_timeout is not None:
        text = replace_once(text, "client_header_timeout 10s;",
                            f"client_header_timeout {header_timeout};")
    proxy.conf.write_text(text)
    return proxy


@contextmanager
def nginx_prefix() -> Iterator[Path]:
    # Not pytest's tmp_path: its parents are private to the user, and nginx's workers may
    # run as another one.
    with tempfile.TemporaryDirectory(prefix="coalition-nginx-") as folder:
        os.chmod(folder, 0o755)
        yield Path(folder)


@contextmanager
def running_nginx(proxy: Proxy) -> Iterator[Proxy]:
    command = [nginx_binary() or "nginx", "-p", str(proxy.prefix), "-c", str(proxy.conf),
               "-e", "stderr", "-g", "daemon off;"]
    with (proxy.prefix / "nginx.out").open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                raise RuntimeError((proxy.prefix / "nginx.out").read_text())
            try:
                socket.create_connection(("127.0.0.1", proxy.tls_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield proxy
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def app_behind_proxy(database_url: DatabaseUrl, tmp_path_factory: pytest.TempPathFactory
                     ) -> Iterator[Served]:
    """The app with its default limits, as nginx would find it: nginx on loopback is the
    one proxy it trusts (COALITION_TRUSTED_PROXIES), so it believes the https and client
    address nginx forwards."""
    with coalition_serve(database_url, tmp_path_factory.mktemp("proxied"),
                         trusted_proxies="127.0.0.1") as served:
        yield served


@needs_nginx
def test_the_sample_nginx_configuration_is_valid():
    with nginx_prefix() as prefix:
        proxy = prepare_proxy(prefix, free_port())
        checked = subprocess.run([nginx_binary() or "nginx", "-t", "-p", str(prefix), "-c",
                                  str(proxy.conf), "-e", "stderr"],
                                 capture_output=True, text=True, timeout=30, check=False)
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr and "test is successful" in checked.stderr


@needs_nginx
def test_nginx_passes_requests_through_and_keeps_secrets_out_of_its_log(app_behind_proxy):
    probe = uuid.uuid4().hex
    with nginx_prefix() as prefix, running_nginx(prepare_proxy(prefix, app_behind_proxy.port)
                                                 ) as proxy:
        with httpx.Client(base_url=proxy.url, verify=False, timeout=10) as client:
            health = client.get(f"/health?probe={probe}",
                                headers={"X-Forwarded-For": "203.0.113.9"})
            assert health.status_code == 200, health.text
            assert health.json() == {"status": "ok", "database": "ok"}
            # The app sees https, as its OAuth issuer and Secure cookies need.
            metadata = client.get("/.well-known/oauth-authorization-server").json()
            assert metadata["issuer"].startswith("https://"), metadata
            too_big = client.post("/api/v1/earn", content=b"x" * (2 * 1024 * 1024),
                                  headers={"Content-Type": "application/json"})
            assert too_big.status_code == 413
            voucher = client.get("/api/v1/vouchers/SECRET-VOUCHER-CODE",
                                 params={"card_number": "4006123412341234"})
            assert voucher.status_code == 401     # the app answered: no token
        plain = httpx.get(f"http://127.0.0.1:{proxy.http_port}/member?x=1",
                          follow_redirects=False)
        assert plain.status_code == 301
        assert plain.headers["location"] == "https://127.0.0.1/member?x=1"
        logged = proxy.access_log()

    # The client cannot choose the address the app sees: nginx replaced the header.
    seen = [line for line in app_behind_proxy.output().splitlines() if probe in line]
    assert len(seen) == 1 and ' 127.0.0.1:0 - "GET /health?probe=' in seen[0], seen
    assert "203.0.113.9" not in app_behind_proxy.output()
    assert '"GET /api/v1/vouchers/[redacted] HTTP/1.1" 401' in logged, logged
    assert "SECRET-VOUCHER-CODE" not in logged and "4006123412341234" not in logged
    assert '"GET /health HTTP/1.1" 200' in logged and probe not in logged


@needs_nginx
def test_nginx_cuts_off_a_client_that_sends_its_headers_too_slowly(app_behind_proxy):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with nginx_prefix() as prefix, running_nginx(
            prepare_proxy(prefix, app_behind_proxy.port, header_timeout="1s")) as proxy:
        raw = socket.create_connection(("127.0.0.1", proxy.tls_port), timeout=10)
        with context.wrap_socket(raw) as conn:
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: coalition.test\r\nX-Slow: ")
            conn.settimeout(0.25)
            started = time.monotonic()
            answer, cut_off = b"", False
            while time.monotonic() - started < 8:
                try:
                    conn.sendall(b"a")               # one byte of header every 0.25 s
                    chunk = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:                       # reset, broken pipe, TLS EOF
                    cut_off = True
                    break
                if not chunk:
                    cut_off = True
                    break
                answer += chunk
            elapsed = time.monotonic() - started
    assert cut_off, answer
    assert elapsed < 4, elapsed
    assert b"200 OK" not in answer
