"""Fetch many URLs: work that waits on the network instead of computing.

A tiny HTTP server runs in a thread of this process, on 127.0.0.1 and a free port; it takes
about 20 ms to answer each request, like a slow API. The URLs are fetched with ``urllib``
through the executor. The probe measures each call's CPU time as a small share of its wall
time, so the cost model treats the work as waiting-bound and may plan more workers than there
are cores (up to eight per usable core); ``explain()`` says how many it considered.

    python examples/io_fetch.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from _serial_baseline import plain_serial_s, serial_comparison

from amorsize_executor import AdaptiveProcessPoolExecutor as ProcessPoolExecutor

RESPONSE_DELAY_S = 0.02
"""How long the local server takes to answer a request."""


class SlowHandler(BaseHTTPRequestHandler):
    """Answers every GET with a small JSON document, after ``RESPONSE_DELAY_S``."""

    def do_GET(self) -> None:
        time.sleep(RESPONSE_DELAY_S)
        body = json.dumps({"path": self.path, "items": list(range(50))}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Keep the example's output readable: no line per request."""


def fetch(url: str) -> tuple[int, int]:
    """GET ``url``; return the HTTP status and the number of items in the JSON body."""
    with urllib.request.urlopen(url, timeout=30) as response:
        document = json.load(response)
        return response.status, len(document["items"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small input: a few seconds")
    args = parser.parse_args()
    n_urls = 60 if args.quick else 600

    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    server.daemon_threads = True
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    host, port = server.server_address[:2]
    urls = [f"http://{host}:{port}/records/{i}" for i in range(n_urls)]
    print(f"serving on http://{host}:{port}/ with {RESPONSE_DELAY_S * 1e3:.0f} ms per request")
    try:
        started = time.perf_counter()
        with ProcessPoolExecutor() as pool:
            results = list(pool.map(fetch, urls))
            elapsed = time.perf_counter() - started
            plan = pool.last_plan
            assert plan is not None
            print(plan.explain())
        serial_s = plain_serial_s(__file__, "fetch", urls)
    finally:
        server.shutdown()
        server.server_close()
        serving.join()

    statuses = Counter(status for status, _ in results)
    print(f"fetched {len(results)} URLs in {elapsed:.2f} s; statuses: {dict(statuses)}")
    print(serial_comparison(elapsed, serial_s))


if __name__ == "__main__":
    main()
