#!/usr/bin/env python3
"""How much do open dashboards cost the gateway?

Starts `spool serve` (give a release build) on a temporary database, then alternates runs of a
closed-loop load (callers enqueueing single jobs as fast as they are answered; workers in the
same process run them, so thousands of events a second flow) with and without N dashboards
open. A dashboard here is what the page does over HTTP on its overview: one `/v1/events`
stream, `GET /v1/queues` once a second (the page coalesces events to one refresh a second),
and `GET /v1/stats?window=hour` and `?window=day` every 10 seconds. (Real browsers would also
spend CPU rendering, on the viewer's machine, not the gateway's.)

    .venv/bin/python bench/dashboard_load.py --spool .build/release/spool --dashboards 10 --seconds 15 --rounds 3
"""
import argparse
import os
import pathlib
import socket
import statistics
import subprocess
import tempfile
import threading
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load(url: str, seconds: float, callers: int) -> float:
    """Enqueues single jobs from `callers` threads for `seconds`; returns accepted jobs/s."""
    stop = time.monotonic() + seconds
    counts = [0] * callers

    def caller(index: int):
        with httpx.Client(base_url=url, timeout=10) as client:
            while time.monotonic() < stop:
                if client.post("/v1/jobs", json={"kind": "demo.noop"}).status_code == 202:
                    counts[index] += 1

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - started)


class Dashboard:
    """The HTTP traffic of one open overview page."""

    def __init__(self, url: str):
        self.url = url
        self.stopped = threading.Event()
        self.events = 0
        self.threads = [threading.Thread(target=self.stream, daemon=True), threading.Thread(target=self.poll, daemon=True)]
        for t in self.threads:
            t.start()

    def stream(self):
        with httpx.Client(base_url=self.url, timeout=httpx.Timeout(10, read=60)) as client:
            with client.stream("GET", "/v1/events") as response:
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        self.events += 1
                    if self.stopped.is_set():
                        return

    def poll(self):
        with httpx.Client(base_url=self.url, timeout=10) as client:
            tick = 0
            while not self.stopped.is_set():
                client.get("/v1/queues")
                if tick % 10 == 0:
                    client.get("/v1/stats?window=hour")
                    client.get("/v1/stats?window=day")
                tick += 1
                self.stopped.wait(1)

    def close(self):
        self.stopped.set()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spool", default=".build/release/spool")
    parser.add_argument("--dashboards", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--callers", type=int, default=16)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOL_")}
        log = open(pathlib.Path(workdir) / "spool.log", "wb")
        server = subprocess.Popen([args.spool, "serve", "--database", f"{workdir}/spool.sqlite", "--port", str(port),
                                   "--log-level", "warning"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            load(url, 3, args.callers)  # warm up
            without, with_dashboards, events = [], [], []
            for _ in range(args.rounds):
                without.append(load(url, args.seconds, args.callers))
                dashboards = [Dashboard(url) for _ in range(args.dashboards)]
                time.sleep(1)
                with_dashboards.append(load(url, args.seconds, args.callers))
                events.append(sum(d.events for d in dashboards) / len(dashboards))
                for d in dashboards:
                    d.close()
                time.sleep(1)
            a, b = statistics.median(without), statistics.median(with_dashboards)
            print(f"enqueue + run, {args.callers} callers, {args.seconds:.0f} s per run, {args.rounds} rounds")
            print(f"  no dashboards: {', '.join(f'{x:.0f}' for x in without)} jobs/s (median {a:.0f})")
            print(f"  {args.dashboards} dashboards: {', '.join(f'{x:.0f}' for x in with_dashboards)} jobs/s (median {b:.0f}); "
                  f"each dashboard received {statistics.median(events):.0f} events per run")
            print(f"  change: {100 * (b - a) / a:+.1f}%")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
