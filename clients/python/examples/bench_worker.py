"""How many no-op jobs one Python worker process runs per second.

    spool serve --database /tmp/b.sqlite --no-demo-jobs &     # a release build for real figures
    python clients/python/examples/bench_worker.py --url http://127.0.0.1:8080 --jobs 20000

Enqueues the jobs in batches of 1,000, then times one Worker draining them (no-op handler).
"""
import argparse
import threading
import time

import spool


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--token", default=None)
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()

    worker = spool.Worker(args.url, args.token, queues=["default"], concurrency=args.concurrency, wait_seconds=1)
    worker.register("bench.py", lambda payload, job: None)
    thread = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False}, daemon=True)
    with spool.Client(args.url, args.token) as client:
        # An empty lease names the kind, so that the gateway accepts jobs of it.
        client._call("POST", "/v1/worker/lease", json={"worker_id": "bench-setup", "queues": ["default"], "kinds": ["bench.py"]})
        for start in range(0, args.jobs, 1000):
            client.enqueue_many([{"kind": "bench.py"}] * min(1000, args.jobs - start))
        began = time.monotonic()
        thread.start()
        while worker.completed < args.jobs:
            time.sleep(0.01)
        elapsed = time.monotonic() - began
    worker.stop()
    thread.join(timeout=30)
    print(f"python worker, concurrency {args.concurrency}: {args.jobs / elapsed:,.0f} jobs/s "
          f"({args.jobs} no-op jobs in {elapsed:.2f} s, queued beforehand)")


if __name__ == "__main__":
    main()
