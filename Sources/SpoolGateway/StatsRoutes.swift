import Foundation
import Hummingbird
import SpoolCore

/// `GET /v1/stats?window=hour|day&queue=`: jobs completed, failed and retried, and wait and
/// run time percentiles, per minute over the last hour (60 buckets) or per 15 minutes over the
/// last day (96 buckets). Every process's stored figures, merged, plus this process's not yet
/// written; another process's current minute appears once it writes it (within a minute).
struct StatsRoutes {
    let gateway: Gateway

    struct Percentiles: Encodable {
        var p50: Double?
        var p95: Double?
        init(_ histogram: LatencyHistogram) { p50 = histogram.percentile(0.5); p95 = histogram.percentile(0.95) }
    }

    struct Bucket: Encodable {
        var start: String
        var completed: Int
        var failed: Int
        var retried: Int
        var wait_ms: Percentiles
        var run_ms: Percentiles
    }

    struct Totals: Encodable {
        var completed = 0
        var failed = 0
        var retried = 0
    }

    struct Answer: Encodable {
        var window: String
        var queue: String?
        var bucket_seconds: Int
        var buckets: [Bucket]
        /// Each queue's totals over the whole window.
        var queues: [String: Totals]
    }

    func register(on api: RouterGroup<SpoolRequestContext>) {
        api.get("stats") { request, context in
            let principal = try context.require(.read)
            let query = request.uri.queryParameters
            let window = query["window"].map(String.init) ?? "hour"
            let (count, minutes): (Int, Int)
            switch window {
            case "hour": (count, minutes) = (60, 1)
            case "day": (count, minutes) = (96, 15)
            default: throw Problem.validation("window", "must be hour or day")
            }
            let queue = query["queue"].map(String.init)
            if let queue { try NewJob.validateQueue(queue) }
            // The last bucket holds the current minute (or quarter hour).
            let now = QueueMinute.minute(of: Date())
            let last = now - now % Int64(minutes)
            let from = last - Int64((count - 1) * minutes)
            let tenant = principal.tenantFilter
            let stored = try await gateway.spool.store.queueMinutes(from: from, to: now + 1, tenant: tenant, queue: queue)
            let pending = gateway.spool.statistics.pending.filter { row in
                (tenant == nil || row.tenant == tenant) && (queue == nil || row.queue == queue)
            }
            let rows = (stored + pending).filter { $0.minute >= from }
            let buckets = StatsBucket.merge(rows, from: from, count: count, minutes: minutes)
            var totals: [String: Totals] = [:]
            for row in rows {
                totals[row.queue, default: Totals()].completed += row.completed
                totals[row.queue, default: Totals()].failed += row.failed
                totals[row.queue, default: Totals()].retried += row.retried
            }
            return try JSONResponse.make(Answer(window: window, queue: queue, bucket_seconds: minutes * 60, buckets: buckets.map {
                Bucket(start: Timestamp.format($0.start), completed: $0.completed, failed: $0.failed, retried: $0.retried,
                       wait_ms: Percentiles($0.wait), run_ms: Percentiles($0.run))
            }, queues: totals))
        }
    }
}
