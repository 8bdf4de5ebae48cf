#!/usr/bin/env python3
"""A webhook receiver for scripts/webhook-test.sh that verifies every request with the
Standard Webhooks reference library (the `standardwebhooks` package on PyPI).

Usage:
  webhook_receiver.py serve LOG PORT_FILE [RULE...]
      Listens on 127.0.0.1, on a free port written to PORT_FILE once it listens. Every
      POST /hook/NAME is verified with NAME's secret (`webhook-id`, `webhook-timestamp`,
      `webhook-signature`); one that fails is answered 401 and counted as unverified. Each
      request is appended to LOG as a JSON line: {t, path, peer (the sender's port), id,
      type, verified, answer, error, body}. A verified one is answered as the first matching rule says, else 200.
      RULEs given here are added as at POST /control/rule.
  webhook_receiver.py summary LOG TYPE [KEY=VALUE...]
      The verified requests of TYPE (`*`: any) whose body matches every KEY=VALUE (a dotted path in the
      body, e.g. data.run.id=7), one line per webhook-id in order of arrival:
      `ID ANSWER,ANSWER,...` (an answer: an HTTP status, or `held` for one never answered).

Control (plain HTTP on the same port, for the test only):
  POST /control/secret/NAME   body: the endpoint's secret (`whsec_...`)
  POST /control/rule          body: JSON {"type", "where": {KEY: VALUE}, "times",
                              "status", "retry_after", "hold"}: the next `times` requests of
                              `type` whose body matches `where` and that carry the webhook-id
                              the first of them carried (one delivery) are answered `status`
                              (with Retry-After: `retry_after` if given), after holding the
                              request open for `hold` seconds if given (logged as `held`).
  GET /control/stats          {"verified": N, "unverified": N}
"""
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook


def dig(body, path):
    """The value at a dotted path of a JSON body, or None."""
    for key in path.split("."):
        if not isinstance(body, dict):
            return None
        body = body.get(key)
    return body


def matches(body, where):
    return all(str(dig(body, key)) == str(value) for key, value in where.items())


class State:
    def __init__(self, log):
        self.lock = threading.Lock()
        self.log = open(log, "a", buffering=1, encoding="utf-8")
        self.secrets = {}
        self.rules = []
        self.verified = 0
        self.unverified = 0

    def record(self, entry):
        with self.lock:
            self.log.write(json.dumps(entry) + "\n")

    def answer_for(self, kind, webhook_id, body):
        """The rule that answers this verified request, if any (and uses up one of its times)."""
        with self.lock:
            for rule in self.rules:
                if rule["times"] <= 0 or rule.get("type") != kind or not matches(body, rule.get("where", {})):
                    continue
                if rule.setdefault("id", webhook_id) != webhook_id:
                    continue
                rule["times"] -= 1
                return rule
        return None


def handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, status, body=b"", headers=()):
            try:
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the sender is gone (the test kills Flowdeck mid-request)
                self.close_connection = True

        def read_body(self):
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_GET(self):
            if self.path == "/control/stats":
                with state.lock:
                    stats = {"verified": state.verified, "unverified": state.unverified}
                return self.reply(200, json.dumps(stats).encode())
            self.reply(404)

        def do_POST(self):
            raw = self.read_body()
            if self.path.startswith("/control/secret/"):
                with state.lock:
                    state.secrets[self.path.rsplit("/", 1)[1]] = raw.decode().strip()
                return self.reply(204)
            if self.path == "/control/rule":
                rule = json.loads(raw)
                rule.setdefault("times", 1)
                with state.lock:
                    state.rules.append(rule)
                return self.reply(204)
            if self.path.startswith("/hook/"):
                return self.hook(raw)
            self.reply(404)

        def hook(self, raw):
            name = self.path[len("/hook/"):]
            entry = {"t": time.time(), "path": self.path, "peer": self.client_address[1],
                     "id": self.headers.get("webhook-id"), "verified": False, "error": None}
            try:
                secret = state.secrets.get(name)
                if secret is None:
                    raise ValueError(f"no secret for /hook/{name}")
                # The reference library: raises WebhookVerificationError on a missing header,
                # a timestamp more than 5 minutes off, or no matching v1 signature.
                body = Webhook(secret).verify(raw, dict(self.headers.items()))
            except Exception as error:  # anything but a verified request counts as unverified
                entry.update(answer=401, error=f"{type(error).__name__}: {error}", body=raw.decode(errors="replace"))
                with state.lock:
                    state.unverified += 1
                state.record(entry)
                return self.reply(401, b'{"error": "signature not verified"}')
            entry.update(verified=True, type=body.get("type"), body=body)
            with state.lock:
                state.verified += 1
            rule = state.answer_for(entry["type"], entry["id"], body)
            status = rule.get("status", 503) if rule else 200
            headers = [("Retry-After", str(rule["retry_after"]))] if rule and "retry_after" in rule else []
            if rule and rule.get("hold"):
                state.record(dict(entry, answer="held"))
                time.sleep(rule["hold"])
                return self.reply(status, b"{}", headers)
            state.record(dict(entry, answer=status))
            self.reply(status, b"{}", headers)

    return Handler


def serve(log, port_file, rules):
    state = State(log)
    state.rules.extend(dict({"times": 1}, **json.loads(rule)) for rule in rules)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(state))
    server.daemon_threads = True
    with open(port_file + ".tmp", "w") as out:
        out.write(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


def summary(log, kind, conditions):
    where = dict(condition.split("=", 1) for condition in conditions)
    answers = {}
    with open(log, encoding="utf-8") as lines:
        for line in lines:
            entry = json.loads(line)
            if entry["verified"] and kind in ("*", entry["type"]) and matches(entry["body"], where):
                answers.setdefault(entry["id"], []).append(str(entry["answer"]))
    for webhook_id, seen in answers.items():
        print(webhook_id, ",".join(seen))


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif len(sys.argv) >= 4 and sys.argv[1] == "summary":
        summary(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit(__doc__)
