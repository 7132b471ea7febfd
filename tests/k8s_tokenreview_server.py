"""A small Kubernetes TokenReview test server for the `vault` store's
Kubernetes-auth tests: Vault's (OpenBao's) kubernetes auth method asks it
whether a service-account JWT is valid, as it would ask a cluster's API
server. It follows the published API (authentication.k8s.io/v1):

  POST /apis/authentication.k8s.io/v1/tokenreviews   review spec.token
  GET  /readyz                                       readiness, for tests only

The reviewer (Vault) must send `Authorization: Bearer <reviewer token>`;
without it the answer is the API server's `401` Status. A review names the
token in `spec.token` and optionally the audiences wanted in
`spec.audiences`. A token listed in --accounts is authenticated (`201`,
`status.authenticated: true`, `status.user` with the username
`system:serviceaccount:NS:NAME`, the account's uid and groups, and
`status.audiences`: the wanted audiences the token holds, or all of its
own when none are wanted); any other token, or one without a wanted
audience, is not (`status.authenticated: false` and `status.error`).

--accounts is a JSON file: {"tokens": [{"token", "namespace", "name",
"uid", "audiences": [...]}]}. --reviewer-token-file holds the reviewer's
token. Each review appends one JSON line to --log (username or null,
authenticated, audiences; never a token). The port (0: any free one) is
written to --port-file once listening. Test-only: plain http on loopback.
"""
import argparse
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"

lock = threading.Lock()


def status_error(code, reason, message):
    """A Kubernetes `Status` object, as the API server answers errors."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "k8s-tokenreview-test/1"

    def log_message(self, fmt, *args):  # requests are in --log; keep stderr quiet
        pass

    def send_json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/readyz":
            data = b"ok"
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self.send_json(404, status_error(404, "NotFound", "the server could not find the requested resource"))

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        if self.path.split("?")[0] != REVIEW_PATH:
            self.send_json(404, status_error(404, "NotFound", "the server could not find the requested resource"))
            return
        auth = self.headers.get("authorization") or ""
        if auth != "Bearer " + self.server.reviewer_token:
            self.send_json(401, status_error(401, "Unauthorized", "Unauthorized"))
            return
        try:
            review = json.loads(raw)
        except ValueError:
            self.send_json(400, status_error(400, "BadRequest", "the request body is not JSON"))
            return
        kind = review.get("kind") or "TokenReview"
        api_version = review.get("apiVersion") or "authentication.k8s.io/v1"
        if kind != "TokenReview" or api_version != "authentication.k8s.io/v1":
            self.send_json(400, status_error(400, "BadRequest", "expected an authentication.k8s.io/v1 TokenReview"))
            return
        spec = review.get("spec") or {}
        token = spec.get("token") or ""
        if not token:
            self.send_json(400, status_error(400, "BadRequest", "token is required for TokenReview in authentication"))
            return
        wanted = spec.get("audiences") or []
        account = self.server.accounts.get(token)
        status = {"authenticated": False, "user": {}}
        if account is None:
            status["error"] = "[invalid bearer token, token lookup failed]"
        else:
            held = account.get("audiences") or []
            granted = [a for a in wanted if a in held] if wanted else list(held)
            if wanted and not granted:
                status["error"] = "[invalid bearer token, token audiences %s is invalid for the target audiences %s]" % (held, wanted)
            else:
                ns, name = account["namespace"], account["name"]
                status = {
                    "authenticated": True,
                    "user": {
                        "username": "system:serviceaccount:%s:%s" % (ns, name),
                        "uid": account["uid"],
                        "groups": [
                            "system:serviceaccounts",
                            "system:serviceaccounts:" + ns,
                            "system:authenticated",
                        ],
                    },
                    "audiences": granted,
                }
        with lock, open(self.server.log_path, "a") as log:
            log.write(json.dumps({
                "username": status["user"].get("username"),
                "authenticated": status["authenticated"],
                "audiences": wanted,
            }) + "\n")
        self.send_json(201, {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            # The real server echoes the spec, token included; a test
            # server has no need to.
            "spec": {"audiences": wanted},
            "status": status,
        })


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", required=True)
    p.add_argument("--accounts", required=True)
    p.add_argument("--reviewer-token-file", required=True)
    p.add_argument("--log", required=True)
    args = p.parse_args()
    with open(args.accounts) as f:
        accounts = {a["token"]: a for a in json.load(f)["tokens"]}
    with open(args.reviewer_token_file) as f:
        reviewer = f.read().strip()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.accounts = accounts
    server.reviewer_token = reviewer
    server.log_path = args.log
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(args.port_file + ".tmp", args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
