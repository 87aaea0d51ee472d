import Foundation
import Metrics

/// The engine's metrics, through swift-metrics (the `spool` binary exports them in Prometheus
/// format at `/metrics`). Labels: `queue` and `kind`.
enum JobMetrics {
    static func enqueued(_ jobs: [EnqueueResult]) {
        for result in jobs where !result.replayed {
            Counter(label: "spool_jobs_enqueued_total", dimensions: [("queue", result.job.queue), ("kind", result.job.kind)]).increment()
        }
    }

    /// `outcome`: completed, failed (for good), retried, timed_out, cancelled, lease_lost, released.
    static func finished(_ job: Job, outcome: String) {
        Counter(label: "spool_jobs_finished_total", dimensions: [("queue", job.queue), ("kind", job.kind), ("outcome", outcome)]).increment()
    }

    /// How long the handler ran.
    static func runTime(_ job: Job, _ duration: Duration) {
        Timer(label: "spool_job_run_seconds", dimensions: [("queue", job.queue), ("kind", job.kind)])
            .recordNanoseconds(Int64(duration.seconds * 1e9))
    }

    /// From when the job was ready (its run-at) to its handler's start.
    static func pickup(_ job: Job, startedAt: Date) {
        Timer(label: "spool_job_pickup_seconds", dimensions: [("queue", job.queue)])
            .recordNanoseconds(Int64(max(0, startedAt.timeIntervalSince(job.runAt)) * 1e9))
    }
}
