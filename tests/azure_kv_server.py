"""A small Azure Key Vault test server (secrets only) for the `azure` store's
tests, following the published REST API (api-version 7.x):

  PUT    /secrets/{name}                  set (new version; value, contentType, tags)
  GET    /secrets/{name}[/{version}]      get a version (with its value)
  GET    /secrets/{name}/versions         list versions (no values), paged
  GET    /secrets                         list secrets (no values), paged via nextLink
  DELETE /secrets/{name}                  soft-delete
  GET    /deletedsecrets/{name}           a deleted secret
  DELETE /deletedsecrets/{name}           purge
  POST   /{tenant}/oauth2/v2.0/token      a fake Entra ID token endpoint (client secret)
  GET    /healthz                         readiness, for scripts only

Served over HTTPS with a test CA created at start in --tls-dir (ca.pem,
server.pem, server.key; reused when present, so a restarted server keeps
its certificate). Every vault call needs `api-version` and a bearer token
the token endpoint issued; without one the answer is Key Vault's real
`401` with `WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/{tenant}", resource="https://vault.azure.net"`.
Names are case-insensitive; values hold at most 25 KiB; 15 tags per
secret, tag values at most 256 characters. Tokens are forgotten on restart.
Test-only: everything lives in memory, and nothing is logged but requests.
"""
import argparse
import datetime
import json
import os
import re
import secrets
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TENANT = "00000000-0000-0000-0000-00000000cafe"
CLIENT_ID = "secret-broker-test"
CLIENT_SECRET = "test-client-secret"
NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
MAX_VALUE = 25 * 1024

lock = threading.Lock()
secrets_db = {}  # lower name -> {"name", "versions": [version dicts]}
deleted = {}  # lower name -> same, plus deletedDate
tokens = set()


def make_tls(tls_dir):
    os.makedirs(tls_dir, exist_ok=True)
    ca_pem = os.path.join(tls_dir, "ca.pem")
    crt = os.path.join(tls_dir, "server.pem")
    key = os.path.join(tls_dir, "server.key")
    if all(os.path.exists(p) for p in (ca_pem, crt, key)):
        return crt, key
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secret-broker test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(srv_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    with open(key, "wb") as f:
        f.write(
            srv_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(crt, "wb") as f:
        f.write(srv.public_bytes(serialization.Encoding.PEM))
    # Written last: its presence means the server's files are complete.
    with open(ca_pem + ".tmp", "wb") as f:
        f.write(ca.public_bytes(serialization.Encoding.PEM))
    os.replace(ca_pem + ".tmp", ca_pem)
    return crt, key


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "azure-kv-test"
    page_size = 25

    def log_message(self, fmt, *args):  # requests only, never bodies
        pass

    def base(self):
        return f"https://{self.headers.get('Host', '127.0.0.1')}"

    def reply(self, status, body=None, headers=()):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if body is not None:
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, code, message):
        self.reply(status, {"error": {"code": code, "message": message}})

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def route(self, method):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        parts = [p for p in url.path.split("/") if p]
        if method == "GET" and parts == ["healthz"]:
            return self.reply(200, {"ok": True})
        if method == "POST" and len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
            return self.token(parts[0])
        body = self.body()
        auth = self.headers.get("Authorization", "")
        if not (auth.startswith("Bearer ") and auth[7:] in tokens):
            return self.reply(
                401,
                {"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}},
                [
                    (
                        "WWW-Authenticate",
                        f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", resource="https://vault.azure.net"',
                    )
                ],
            )
        if "api-version" not in query:
            return self.error(400, "BadParameter", "The 'api-version' query parameter is missing.")
        with lock:
            return self.vault(method, parts, query, body)

    def token(self, tenant):
        form = urllib.parse.parse_qs(self.body().decode())
        ok = (
            tenant == TENANT
            and form.get("grant_type") == ["client_credentials"]
            and form.get("client_id") == [CLIENT_ID]
            and form.get("client_secret") == [CLIENT_SECRET]
            and form.get("scope") == ["https://vault.azure.net/.default"]
        )
        if not ok:
            return self.reply(
                401, {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}
            )
        t = secrets.token_urlsafe(32)
        tokens.add(t)
        self.reply(200, {"token_type": "Bearer", "expires_in": 3599, "access_token": t})

    def page(self, keyed, query, path):
        """One page of `keyed` ((key, item) pairs sorted by key). The
        continuation token is the last key served, as Key Vault's opaque
        tokens behave: a write between two pages neither repeats nor skips an
        item that exists throughout (an offset would do both)."""
        size = min(int((query.get("maxresults") or [self.page_size])[0]), self.page_size)
        after = (query.get("$skiptoken") or [None])[0]
        rest = [(k, i) for k, i in keyed if after is None or k > after]
        chunk = rest[:size]
        out = {"value": [i for _, i in chunk], "nextLink": None}
        if len(rest) > size:
            q = urllib.parse.urlencode(
                {"api-version": query["api-version"][0], "maxresults": size, "$skiptoken": chunk[-1][0]}
            )
            out["nextLink"] = f"{self.base()}{path}?{q}"
        return self.reply(200, out)

    def bundle(self, s, v, with_value):
        b = {
            "id": f"{self.base()}/secrets/{s['name']}/{v['version']}",
            "attributes": v["attributes"],
            "tags": v["tags"],
        }
        if v.get("contentType") is not None:
            b["contentType"] = v["contentType"]
        if with_value:
            b["value"] = v["value"]
        return b

    def vault(self, method, parts, query, body):
        if parts == ["secrets"] and method == "GET":
            keyed = []
            for s in sorted(list(secrets_db.values()), key=lambda s: s["name"].lower()):
                v = s["versions"][-1]
                item = self.bundle(s, v, False)
                item["id"] = f"{self.base()}/secrets/{s['name']}"
                keyed.append((s["name"].lower(), item))
            return self.page(keyed, query, "/secrets")
        if len(parts) >= 2 and parts[0] == "secrets":
            name = parts[1]
            if not NAME.match(name):
                return self.error(400, "BadParameter", "The secret name is invalid.")
            low = name.lower()
            s = secrets_db.get(low)
            if method == "PUT" and len(parts) == 2:
                if low in deleted:
                    return self.error(409, "Conflict", f"Secret {name} is currently in a deleted but recoverable state.")
                try:
                    req = json.loads(body or b"{}")
                except ValueError:
                    return self.error(400, "BadParameter", "The request body is not JSON.")
                value, tags = req.get("value"), req.get("tags") or {}
                if not isinstance(value, str):
                    return self.error(400, "BadParameter", "Property 'value' is required.")
                if len(value) > MAX_VALUE:
                    return self.error(400, "BadParameter", "The secret value exceeds the maximum size of 25 KB.")
                if len(tags) > 15 or any(len(k) > 512 or len(str(t)) > 256 for k, t in tags.items()):
                    return self.error(400, "BadParameter", "Too many tags, or a tag is too long.")
                now = int(time.time())
                if s is None:
                    s = secrets_db[low] = {"name": name, "versions": []}
                v = {
                    "version": secrets.token_hex(16),
                    "value": value,
                    "contentType": req.get("contentType"),
                    "tags": tags,
                    "attributes": {"enabled": True, "created": now, "updated": now, "recoveryLevel": "Recoverable+Purgeable"},
                }
                s["versions"].append(v)
                return self.reply(200, self.bundle(s, v, True))
            if method == "GET" and len(parts) == 3 and parts[2] == "versions":
                if s is None:
                    return self.error(404, "SecretNotFound", f"A secret with (name/id) {name} was not found in this key vault.")
                keyed = [(f"{i:08d}", self.bundle(s, v, False)) for i, v in enumerate(s["versions"])]
                return self.page(keyed, query, f"/secrets/{name}/versions")
            if method == "GET" and len(parts) in (2, 3):
                if s is None:
                    return self.error(404, "SecretNotFound", f"A secret with (name/id) {name} was not found in this key vault.")
                if len(parts) == 3 and parts[2]:
                    match = [v for v in s["versions"] if v["version"] == parts[2]]
                    if not match:
                        return self.error(404, "SecretNotFound", "No such version.")
                    v = match[0]
                else:
                    v = s["versions"][-1]
                return self.reply(200, self.bundle(s, v, True))
            if method == "DELETE" and len(parts) == 2:
                if s is None:
                    return self.error(404, "SecretNotFound", f"A secret with (name/id) {name} was not found in this key vault.")
                del secrets_db[low]
                s["deletedDate"] = int(time.time())
                deleted[low] = s
                b = self.bundle(s, s["versions"][-1], False)
                b["recoveryId"] = f"{self.base()}/deletedsecrets/{s['name']}"
                b["deletedDate"] = s["deletedDate"]
                return self.reply(200, b)
        if len(parts) == 2 and parts[0] == "deletedsecrets":
            low = parts[1].lower()
            d = deleted.get(low)
            if d is None:
                return self.error(404, "SecretNotFound", f"Deleted Secret not found: {parts[1]}")
            if method == "GET":
                b = self.bundle(d, d["versions"][-1], False)
                b["deletedDate"] = d["deletedDate"]
                return self.reply(200, b)
            if method == "DELETE":
                del deleted[low]
                return self.reply(204)
        return self.error(405, "MethodNotAllowed", "Not supported by the test server.")

    def do_GET(self):
        self.route("GET")

    def do_PUT(self):
        self.route("PUT")

    def do_DELETE(self):
        self.route("DELETE")

    def do_POST(self):
        self.route("POST")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8443)
    ap.add_argument("--tls-dir", required=True)
    ap.add_argument("--page-size", type=int, default=3, help="small, so paging is exercised")
    a = ap.parse_args()
    Handler.page_size = a.page_size
    crt, key = make_tls(a.tls_dir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(crt, key)
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
