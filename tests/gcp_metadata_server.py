"""A small Google credentials test server for the `gcp` store's workload
identity tests (standard library only, plain HTTP on loopback), following the
published APIs:

  GET  /computeMetadata/v1/instance/service-accounts/default/token
                     the metadata server's access token (GCE, GKE workload
                     identity, Cloud Run); needs `Metadata-Flavor: Google`
                     and refuses proxied requests (`X-Forwarded-For`), as the
                     real one does; answers `Metadata-Flavor: Google`
  GET  /computeMetadata/v1/instance/service-accounts/default/email
  POST /v1/token     Security Token Service token exchange (RFC 8693), as
                     an `external_account` credential file uses it: the
                     subject token must be a JWT from ISSUER, for AUDIENCE,
                     and valid now (its signature is not checked)
  GET  /healthz      readiness, for tests only
  GET  /_test/stats  test only: tokens issued, calls passed and refused
  *    anything else: Secret Manager, forwarded to --upstream (cloudbox)
                     only with a bearer token this server issued, else
                     Google's `401 UNAUTHENTICATED`: cloudbox checks no
                     token, this makes the broker's token matter.

Test-only: everything lives in memory; nothing is logged.
"""
import argparse
import base64
import http.client
import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
EMAIL_PATH = "/computeMetadata/v1/instance/service-accounts/default/email"
EMAIL = "secret-broker@sb-test.iam.gserviceaccount.com"
# The workload identity pool provider an `external_account` file names, and
# the issuer of the tokens it trusts (e.g. a Kubernetes cluster's).
AUDIENCE = "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/k8s"
ISSUER = "https://oidc.test"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
HOP = {"connection", "keep-alive", "transfer-encoding", "host", "authorization", "content-length"}

lock = threading.Lock()
tokens = set()
stats = {"metadata_token": 0, "sts_token": 0, "scopes": [], "passed": 0, "refused": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gcp-credentials-test"
    upstream = None

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body, content_type="application/json", headers=()):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def issue(self, kind):
        t = "ya29.test-" + secrets.token_urlsafe(32)
        with lock:
            tokens.add(t)
            stats[kind] += 1
        return t

    def handle_any(self, method):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/healthz":
            return self.reply(200, {"ok": True})
        if url.path == "/_test/stats":
            with lock:
                return self.reply(200, stats)
        if url.path.startswith("/computeMetadata/"):
            return self.metadata(method, url.path, query)
        if method == "POST" and url.path == "/v1/token":
            return self.sts()
        return self.forward(method)

    def metadata(self, method, path, query):
        flavor = [("Metadata-Flavor", "Google")]
        if self.headers.get("Metadata-Flavor") != "Google" or self.headers.get("X-Forwarded-For"):
            return self.reply(
                403, b"Missing Metadata-Flavor:Google header.\n", "text/plain; charset=utf-8", flavor
            )
        if method == "GET" and path == TOKEN_PATH:
            with lock:
                stats["scopes"].append((query.get("scopes") or [None])[0])
            t = self.issue("metadata_token")
            return self.reply(200, {"access_token": t, "expires_in": 3599, "token_type": "Bearer"}, headers=flavor)
        if method == "GET" and path == EMAIL_PATH:
            return self.reply(200, EMAIL.encode(), "application/text", flavor)
        return self.reply(404, b"Not Found\n", "text/plain; charset=utf-8", flavor)

    def sts(self):
        form = urllib.parse.parse_qs(self.body().decode())
        one = lambda k: (form.get(k) or [None])[0]

        def refuse(error, description):
            self.reply(400, {"error": error, "error_description": description})

        if one("grant_type") != TOKEN_EXCHANGE:
            return refuse("unsupported_grant_type", "Unsupported grant_type.")
        if one("audience") != AUDIENCE:
            return refuse("invalid_target", "The target service indicated by the \"audience\" parameters is invalid.")
        if one("subject_token_type") != JWT_TYPE:
            return refuse("invalid_request", "Invalid value for \"subject_token_type\".")
        try:
            payload = one("subject_token").split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            assert isinstance(claims, dict)
        except Exception:
            return refuse("invalid_request", "Unable to parse the ID Token.")
        if claims.get("iss") != ISSUER:
            return refuse("invalid_grant", f"The issuer in ID Token {claims.get('iss')} does not match the expected ones.")
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= time.time():
            return refuse("invalid_grant", "The ID Token is expired.")
        t = self.issue("sts_token")
        self.reply(200, {
            "access_token": t,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
            "token_type": "Bearer",
            "expires_in": 3599,
        })

    def forward(self, method):
        body = self.body()
        auth = self.headers.get("Authorization", "")
        with lock:
            ok = auth.startswith("Bearer ") and auth[7:] in tokens
            stats["passed" if ok else "refused"] += 1
        if not ok:
            return self.reply(401, {"error": {
                "code": 401,
                "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
                "status": "UNAUTHENTICATED",
            }}, headers=[("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/"')])
        up = urllib.parse.urlsplit(self.upstream)
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        conn.request(method, self.path, body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        self.reply(resp.status, data, resp.getheader("Content-Type", "application/json"))

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_DELETE(self):
        self.handle_any("DELETE")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="cloudbox's URL, e.g. http://127.0.0.1:8090")
    a = ap.parse_args()
    Handler.upstream = a.upstream
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    srv.serve_forever()


if __name__ == "__main__":
    main()
