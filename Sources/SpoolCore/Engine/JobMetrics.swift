import Foundation
import Metrics
import Synchronization

/// The engine's metrics, through swift-metrics (the `spool` binary exports them in Prometheus
/// format at `/metrics`). Labels: `queue` and `kind`.
///
/// Metric handles are made once per label set and cached: making one per job costs a factory
/// lookup and an allocation on the hot path.
enum JobMetrics {
    private struct Key: Hashable {
        var metric: String
        var queue: String
        var kind: String
        var outcome: String
    }
    private static let counters = Mutex<[Key: Counter]>([:])
    private static let timers = Mutex<[Key: Timer]>([:])

    private static func counter(_ key: Key) -> Counter {
        counters.withLock { cache in
            if let c = cache[key] { return c }
            var dimensions = [("queue", key.queue), ("kind", key.kind)]
            if !key.outcome.isEmpty { dimensions.append(("outcome", key.outcome)) }
            let c = Counter(label: key.metric, dimensions: dimensions)
            cache[key] = c
            return c
        }
    }

    private static func timer(_ key: Key) -> Timer {
        timers.withLock { cache in
            if let t = cache[key] { return t }
            var dimensions = [("queue", key.queue)]
            if !key.kind.isEmpty { dimensions.append(("kind", key.kind)) }
            let t = Timer(label: key.metric, dimensions: dimensions)
            cache[key] = t
            return t
        }
    }

    static func enqueued(_ jobs: [EnqueueResult]) {
        for result in jobs where !result.replayed {
            counter(Key(metric: "spool_jobs_enqueued_total", queue: result.job.queue, kind: result.job.kind, outcome: "")).increment()
        }
    }

    /// An event published to a topic, and the jobs it made.
    static func published(topic: String, jobs: Int) {
        Counter(label: "spool_topic_events_published_total", dimensions: [("topic", topic)]).increment()
        if jobs > 0 { Counter(label: "spool_topic_jobs_total", dimensions: [("topic", topic)]).increment(by: jobs) }
    }

    /// `outcome`: completed, failed (for good), retried, cancelled, lease_lost, released.
    static func finished(_ job: Job, outcome: String) {
        counter(Key(metric: "spool_jobs_finished_total", queue: job.queue, kind: job.kind, outcome: outcome)).increment()
    }

    /// How long the handler ran.
    static func runTime(_ job: Job, _ duration: Duration) {
        timer(Key(metric: "spool_job_run_seconds", queue: job.queue, kind: job.kind, outcome: ""))
            .recordNanoseconds(Int64(duration.seconds * 1e9))
    }

    /// From when the job was ready (its run-at) to its handler's start.
    static func pickup(_ job: Job, startedAt: Date) {
        timer(Key(metric: "spool_job_pickup_seconds", queue: job.queue, kind: "", outcome: ""))
            .recordNanoseconds(Int64(max(0, min(1e9, startedAt.timeIntervalSince(job.runAt))) * 1e9))
    }
}
