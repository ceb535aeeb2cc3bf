"""A WSGI backend on wsgiref: the CGI-style environ normalises header names (`-` and `_` both
become `_`, upper-cased), as Django, Flask and PHP backends read them. Answers every request with
the environ's HTTP_* entries as JSON. Prints `listening PORT` once bound to 127.0.0.1:0."""
import json
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server


def app(environ, start_response):
    seen = {k: v for k, v in environ.items() if k.startswith("HTTP_")}
    body = json.dumps(seen, sort_keys=True).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


server = make_server("127.0.0.1", 0, app, handler_class=Quiet)
print(f"listening {server.server_port}", flush=True)
sys.stdout.flush()
server.serve_forever()
