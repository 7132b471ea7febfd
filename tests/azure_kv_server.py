"""A small Azure Key Vault test server (secrets only) for the `azure` store's
tests, following the published REST API (api-version 7.x):

  PUT    /secrets/{name}                  set (new version; value, contentType, tags)
  GET    /secrets/{name}[/{version}]      get a version (with its value)
  GET    /secrets/{name}/versions         list versions (no values), paged
  GET    /secrets                         list secrets (no values), paged via nextLink
  DELETE /secrets/{name}                  soft-delete
  GET    /deletedsecrets/{name}           a deleted secret
  DELETE /deletedsecrets/{name}           purge
  POST   /{tenant}/oauth2/v2.0/token      a fake Entra ID token endpoint: client secret,
                                          or workload identity (a federated JWT assertion)
  GET    /metadata/identity/oauth2/token  managed identity as IMDS serves it (`Metadata: true`)
  GET    /msi/token                       managed identity as App Service serves it
                                          ($IDENTITY_ENDPOINT, `X-IDENTITY-HEADER`)
  GET    /healthz                         readiness, for scripts only
  GET    /_test/stats                     test only: tokens issued, per grant
  POST   /_test/forget-tokens             test only: forget every access token issued

Served over HTTPS with a test CA created at start in --tls-dir (ca.pem,
server.pem, server.key; reused when present, so a restarted server keeps
its certificate). Every vault call needs `api-version` and a bearer token
the token endpoint issued; without one the answer is Key Vault's real
`401` with `WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/{tenant}", resource="https://vault.azure.net"`.
Workload identity follows Entra's federated credential: the assertion is a
JWT whose `iss`, `sub` and `aud` must match the one federated credential
below and which must be within its validity; its signature is not checked.
Refusals have Entra's real shape (`error`, `error_description` with the
AADSTS code, `error_codes`, trace and correlation ids).
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
import uuid
import base64
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TENANT = "00000000-0000-0000-0000-00000000cafe"
CLIENT_ID = "secret-broker-test"
CLIENT_SECRET = "test-client-secret"
NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
MAX_VALUE = 25 * 1024
# The app's one federated identity credential (a Kubernetes service account).
FEDERATED_ISSUER = "https://oidc.test"
FEDERATED_SUBJECT = "system:serviceaccount:acme:secret-broker"
FEDERATED_AUDIENCE = "api://AzureADTokenExchange"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Managed identity: App Service's per-process header secret, and the
# user-assigned identity IMDS and App Service know besides the system one.
IDENTITY_HEADER = "test-identity-header"
USER_ASSIGNED_CLIENT_ID = "secret-broker-user-assigned"
VAULT_RESOURCE = "https://vault.azure.net"

lock = threading.Lock()
secrets_db = {}  # lower name -> {"name", "versions": [version dicts]}
deleted = {}  # lower name -> same, plus deletedDate
tokens = set()
# Test only: how tokens were obtained. Ids and claims, never a credential.
stats = {"client_secret": 0, "workload": 0, "workload_jti": [], "imds": 0, "app_service": 0, "client_ids": []}


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
        if method == "GET" and parts == ["_test", "stats"]:
            with lock:
                return self.reply(200, stats)
        if method == "POST" and parts == ["_test", "forget-tokens"]:
            with lock:
                tokens.clear()
            return self.reply(204)
        if method == "POST" and len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
            return self.token(parts[0])
        if method == "GET" and parts == ["metadata", "identity", "oauth2", "token"]:
            return self.imds(query)
        if method == "GET" and [p.lower() for p in parts] == ["msi", "token"]:
            return self.app_service(query)
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

    def aad_error(self, status, error, code, text):
        """A refusal in Entra ID's real shape."""
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
        self.reply(
            status,
            {
                "error": error,
                "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {trace}\r\nCorrelation ID: {corr}\r\nTimestamp: {now}",
                "error_codes": [code],
                "timestamp": now,
                "trace_id": trace,
                "correlation_id": corr,
                "error_uri": f"https://login.microsoftonline.com/error?code={code}",
            },
        )

    def issue(self, kind):
        t = secrets.token_urlsafe(32)
        with lock:
            tokens.add(t)
            stats[kind] += 1
        return t

    def token(self, tenant):
        form = urllib.parse.parse_qs(self.body().decode())
        one = lambda k: (form.get(k) or [None])[0]
        if tenant != TENANT:
            return self.aad_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        if one("grant_type") != "client_credentials":
            return self.aad_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        if one("client_id") != CLIENT_ID:
            return self.aad_error(
                400, "unauthorized_client", 700016,
                f"Application with identifier '{one('client_id')}' was not found in the directory '{TENANT}'.",
            )
        if one("scope") != f"{VAULT_RESOURCE}/.default":
            return self.aad_error(400, "invalid_scope", 70011, f"The provided value for the input parameter 'scope' is not valid.")
        if one("client_assertion") is not None:
            return self.workload(one("client_assertion_type"), one("client_assertion"))
        if one("client_secret") != CLIENT_SECRET:
            return self.reply(
                401, {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}
            )
        t = self.issue("client_secret")
        self.reply(200, {"token_type": "Bearer", "expires_in": 3599, "access_token": t})

    def workload(self, assertion_type, assertion):
        """Workload identity federation: the assertion must match the app's
        federated credential (issuer, subject, audience) and be valid now."""
        if assertion_type != JWT_BEARER:
            return self.aad_error(
                400, "invalid_request", 7000219,
                f"'client_assertion_type' must be '{JWT_BEARER}'.",
            )
        try:
            payload = assertion.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            assert isinstance(claims, dict)
        except Exception:
            return self.aad_error(400, "invalid_request", 50027, "JWT token is invalid or malformed.")
        now = int(time.time())
        exp, nbf = claims.get("exp", 0), claims.get("nbf", claims.get("iat", 0))
        if not (isinstance(exp, int) and isinstance(nbf, int) and nbf - 300 <= now < exp):
            return self.aad_error(
                400, "invalid_client", 700024,
                f"Client assertion is not within its valid time range. Current time: {now}, assertion valid from {nbf}, expiry time of assertion {exp}.",
            )
        aud = claims.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if claims.get("iss") != FEDERATED_ISSUER or claims.get("sub") != FEDERATED_SUBJECT or FEDERATED_AUDIENCE not in auds:
            return self.aad_error(
                400, "invalid_request", 70021,
                "No matching federated identity record found for presented assertion. "
                f"Assertion Issuer: '{claims.get('iss')}'. Assertion Subject: '{claims.get('sub')}'. "
                f"Assertion Audience: '{','.join(str(a) for a in auds)}'. "
                "https://docs.microsoft.com/en-us/azure/active-directory/develop/workload-identity-federation",
            )
        t = self.issue("workload")
        with lock:
            stats["workload_jti"].append(claims.get("jti"))
        self.reply(200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": t})

    def managed_identity_client(self, query):
        """The identity asked for: system-assigned, or the one user-assigned
        identity; None if it is not this machine's."""
        client = (query.get("client_id") or [None])[0]
        if client not in (None, USER_ASSIGNED_CLIENT_ID):
            return None
        with lock:
            stats["client_ids"].append(client)
        return client or "system-assigned"

    def imds(self, query):
        """IMDS (api-version 2018-02-01): needs `Metadata: true`."""
        if self.headers.get("Metadata") != "true":
            return self.reply(400, {"error": "invalid_request", "error_description": "Required metadata header not specified"})
        if (query.get("api-version") or [None])[0] is None:
            return self.reply(400, {"error": "invalid_request", "error_description": "Required query variable 'api-version' is missing"})
        resource = (query.get("resource") or [""])[0].rstrip("/")
        if resource != VAULT_RESOURCE:
            return self.reply(400, {"error": "invalid_resource", "error_description": f"AADSTS500011: The resource principal named {resource} was not found in the tenant."})
        client = self.managed_identity_client(query)
        if client is None:
            return self.reply(400, {"error": "invalid_request", "error_description": "Identity not found"})
        t = self.issue("imds")
        now = int(time.time())
        self.reply(200, {
            "access_token": t, "client_id": client, "expires_in": "86399", "expires_on": str(now + 86399),
            "ext_expires_in": "86399", "not_before": str(now), "resource": VAULT_RESOURCE, "token_type": "Bearer",
        })

    def app_service(self, query):
        """App Service (api-version 2019-08-01): needs the `X-IDENTITY-HEADER`
        the platform put in $IDENTITY_HEADER; `expires_on` is epoch seconds."""
        if self.headers.get("X-IDENTITY-HEADER") != IDENTITY_HEADER:
            return self.reply(401, {"statusCode": 401, "message": "Unauthorized: missing or wrong X-IDENTITY-HEADER"})
        if (query.get("api-version") or [None])[0] != "2019-08-01":
            return self.reply(400, {"statusCode": 400, "message": "The api-version is not supported."})
        resource = (query.get("resource") or [""])[0].rstrip("/")
        if resource != VAULT_RESOURCE:
            return self.reply(400, {"statusCode": 400, "message": f"Resource {resource} is not valid."})
        client = self.managed_identity_client(query)
        if client is None:
            return self.reply(400, {"statusCode": 400, "message": "Identity not found"})
        t = self.issue("app_service")
        self.reply(200, {
            "access_token": t, "expires_on": str(int(time.time()) + 86399), "resource": VAULT_RESOURCE,
            "token_type": "Bearer", "client_id": client,
        })

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
