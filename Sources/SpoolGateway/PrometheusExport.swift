import CoreMetrics
import Prometheus

/// swift-metrics → Prometheus, with what `promtool check metrics` asks of an exporter: every
/// metric has `# HELP` text, counters end in `_total`, durations are histograms in seconds.
///
/// Metrics are named where they are recorded (the engine, Hummingbird's middleware); this
/// factory gives each known label its Prometheus name and help text, and any other label a
/// sanitized name and a generic help text. Bootstrap swift-metrics with it once per process.
public struct PrometheusExport: CoreMetrics.MetricsFactory {
    public let registry: PrometheusCollectorRegistry
    private let buckets: [Duration]
    private let base: PrometheusMetricsFactory

    public init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
        base = PrometheusMetricsFactory(registry: registry)
        buckets = base.defaultDurationHistogramBuckets
    }

    /// Prometheus name and help text per swift-metrics label.
    static let catalogue: [String: (name: String, help: String)] = [
        "spool_jobs_enqueued_total": ("spool_jobs_enqueued_total", "Jobs enqueued, by queue and kind (replays of an idempotency key not counted)."),
        "spool_jobs_finished_total": ("spool_jobs_finished_total", "Attempts that ended, by queue, kind and outcome (completed, failed, retried, cancelled, lease_lost, released)."),
        "spool_job_run_seconds": ("spool_job_run_seconds", "How long handlers ran, by queue and kind."),
        "spool_job_pickup_seconds": ("spool_job_pickup_seconds", "From when a job was ready to when its handler started, by queue."),
        "spool_event_log_undecodable_total": ("spool_event_log_undecodable_total", "Event-log entries skipped because they could not be decoded."),
        "hb.requests": ("spool_http_requests_total", "HTTP requests answered, by method, route and status."),
        "hb.request.errors": ("spool_http_request_errors_total", "HTTP requests that ended in an error, by method, route and status."),
        "http.server.request.duration": ("spool_http_request_duration_seconds", "How long HTTP requests took to answer."),
        "http.server.active_requests": ("spool_http_active_requests", "HTTP requests being answered now."),
    ]

    /// Help text of the gauges the gateway sets at scrape time.
    static let gaugeHelp: [String: String] = [
        "spool_queue_jobs": "Jobs in each queue, by state.",
        "spool_queue_oldest_pending_age_seconds": "How long the oldest ready job of each queue has waited.",
        "spool_queue_paused": "1 when the queue is paused.",
        "spool_workers": "Workers in the registry: active, or lost (missed their heartbeats; dropped later).",
    ]

    static func describe(_ label: String) -> (name: String, help: String) {
        if let known = catalogue[label] { return known }
        let name = String(label.map { $0.isLetter || $0.isNumber || $0 == "_" ? $0 : "_" })
        return (name, "Metric \(name).")
    }

    public func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        let (name, help) = Self.describe(label)
        return registry.makeCounter(name: name.hasSuffix("_total") ? name : name + "_total", labels: dimensions, help: help)
    }

    public func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        let (name, help) = Self.describe(label)
        return registry.makeCounter(name: name.hasSuffix("_total") ? name : name + "_total", labels: dimensions, help: help)
    }

    public func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        let (name, help) = Self.describe(label)
        if aggregate { return registry.makeValueHistogram(name: name, labels: dimensions, buckets: base.defaultValueHistogramBuckets, help: help) }
        return registry.makeGauge(name: name, labels: dimensions, help: help)
    }

    public func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        let (name, help) = Self.describe(label)
        return registry.makeGauge(name: name, labels: dimensions, help: help)
    }

    public func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        let (described, help) = Self.describe(label)
        let name = described.hasSuffix("_seconds") ? described : described + "_seconds"
        return registry.makeDurationHistogram(name: name, labels: dimensions, buckets: buckets, help: help)
    }

    public func destroyCounter(_ handler: any CounterHandler) { base.destroyCounter(handler) }
    public func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) { base.destroyFloatingPointCounter(handler) }
    public func destroyRecorder(_ handler: any RecorderHandler) { base.destroyRecorder(handler) }
    public func destroyMeter(_ handler: any MeterHandler) { base.destroyMeter(handler) }
    public func destroyTimer(_ handler: any TimerHandler) { base.destroyTimer(handler) }
}
