#!/usr/bin/env python3
"""How much do open dashboards cost the gateway?

Starts `spool serve` (give a release build) on a temporary database, with its workers, and
alternates runs of wrk enqueueing single jobs as fast as they are answered (the jobs run at
once, so thousands of events a second flow) with and without N dashboards open. A dashboard
here is what the page does over HTTP on its overview: one `/v1/events/summary` stream (at
most one message a second; `--full-feed` reads `/v1/events`, every event, instead), read by
`curl -N`, which costs next to nothing; `GET /v1/queues` once a second (the page reads again
at most once a second) and `GET /v1/stats?window=hour` and `?window=day` every 10 seconds. The dashboards' own requests are timed: that is how responsive the page stays.
(Real browsers also spend CPU rendering, on the viewer's machine, not the gateway's.)

    apt-get install wrk
    .venv/bin/python bench/dashboard_load.py --spool .build/release/spool --dashboards 10 --seconds 15 --rounds 3
"""
import argparse
import os
import pathlib
import re
import socket
import statistics
import subprocess
import tempfile
import threading
import time

import httpx

ROOT = pathlib.Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wrk(url: str, seconds: float, connections: int) -> float:
    """Enqueues from `connections` keep-alive connections for `seconds`; returns enqueues/s."""
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "-s", str(ROOT / "bench/enqueue.lua"), url],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"enqueues/s: (\d+)", out).group(1))


class Dashboards:
    """The HTTP traffic of `n` open overview pages; times their polls."""

    def __init__(self, url: str, n: int, feed: str):
        self.streams = [subprocess.Popen(["curl", "-sN", url + feed], stdout=subprocess.DEVNULL) for _ in range(n)]
        self.stopped = threading.Event()
        self.timings: list[float] = []
        self.threads = [threading.Thread(target=self.poll, args=(url,), daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def poll(self, url: str):
        with httpx.Client(base_url=url, timeout=10) as client:
            tick = 0
            while not self.stopped.is_set():
                started = time.monotonic()
                client.get("/v1/queues")
                if tick % 10 == 0:
                    client.get("/v1/stats?window=hour")
                    client.get("/v1/stats?window=day")
                self.timings.append(time.monotonic() - started)
                tick += 1
                self.stopped.wait(1)

    def close(self):
        self.stopped.set()
        for stream in self.streams:
            stream.terminate()
            stream.wait()
        for t in self.threads:
            t.join()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spool", default=".build/release/spool")
    parser.add_argument("--dashboards", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--full-feed", action="store_true", help="dashboards read /v1/events (every event) instead of the summaries")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOL_")}
        log = open(pathlib.Path(workdir) / "spool.log", "wb")
        server = subprocess.Popen([str(pathlib.Path(args.spool).resolve()), "serve", "--database", f"{workdir}/spool.sqlite",
                                   "--port", str(port), "--log-level", "warning"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            wrk(url, 3, args.connections)  # warm up
            without, with_dashboards, polls = [], [], []
            for _ in range(args.rounds):
                without.append(wrk(url, args.seconds, args.connections))
                dashboards = Dashboards(url, args.dashboards, "/v1/events" if args.full_feed else "/v1/events/summary")
                time.sleep(1)
                with_dashboards.append(wrk(url, args.seconds, args.connections))
                dashboards.close()
                polls += dashboards.timings
                time.sleep(1)
            a, b = statistics.median(without), statistics.median(with_dashboards)
            polls.sort()
            print(f"enqueue (wrk, {args.connections} connections) while the workers run every job, {args.seconds:.0f} s per run, {args.rounds} rounds")
            print(f"  no dashboards:  {' / '.join(f'{x:.0f}' for x in without)} jobs/s (median {a:.0f})")
            print(f"  {args.dashboards} dashboards ({'every event' if args.full_feed else 'summaries'}): {' / '.join(f'{x:.0f}' for x in with_dashboards)} jobs/s (median {b:.0f}), change {100 * (b - a) / a:+.1f}%")
            print(f"  the dashboards' polls meanwhile: p50 {1000 * polls[len(polls) // 2]:.1f} ms, "
                  f"p99 {1000 * polls[int(len(polls) * 0.99)]:.1f} ms ({len(polls)} polls)")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
