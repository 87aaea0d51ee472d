import Foundation
import Hummingbird
import Prometheus
import SpoolCore

/// Health, readiness, Prometheus metrics and the OpenAPI document.
struct OpsRoutes {
    let gateway: Gateway

    func register(on router: Router<SpoolRequestContext>) {
        router.get("healthz") { _, _ in
            try JSONResponse.make(["status": "ok"])
        }
        router.get("readyz") { _, _ in
            do {
                _ = try await gateway.spool.store.queueStats(tenant: nil)
            } catch {
                throw Problem(.serviceUnavailable, type: "unavailable", title: "The store is unavailable", detail: "\(error)", retryAfter: 1)
            }
            return try JSONResponse.make(["status": "ready"])
        }
        router.get("metrics") { _, _ in
            try await updateDepthGauges()
            var buffer: [UInt8] = []
            buffer.reserveCapacity(16_384)
            gateway.metrics.emit(into: &buffer)
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"], body: .init(byteBuffer: ByteBuffer(bytes: buffer)))
        }
    }

    /// Depth gauges are read from the store at scrape time, so they hold for every process
    /// sharing the database.
    private func updateDepthGauges() async throws {
        for stats in try await gateway.spool.store.queueStats(tenant: nil) {
            for state in JobState.allCases {
                gauge("spool_queue_jobs", [("queue", stats.name), ("state", state.rawValue)])
                    .set(Double(stats.counts[state] ?? 0))
            }
            gauge("spool_queue_oldest_pending_age_seconds", [("queue", stats.name)])
                .set(stats.oldestPendingAge?.seconds ?? 0)
            gauge("spool_queue_paused", [("queue", stats.name)]).set(stats.paused ? 1.0 : 0.0)
        }
        let now = Date()
        let workers = try await gateway.spool.store.workers(tenant: nil)
        for state in ["active", "lost"] {
            gauge("spool_workers", [("state", state)]).set(Double(workers.filter { $0.state(at: now) == state }.count))
        }
    }

    private func gauge(_ name: String, _ labels: [(String, String)]) -> Prometheus.Gauge {
        gateway.metrics.makeGauge(name: name, labels: labels, help: PrometheusExport.gaugeHelp[name] ?? "Metric \(name).")
    }

    /// The OpenAPI document shipped with the gateway (`Sources/SpoolGateway/openapi.json`).
    static let openAPIDocument: Data? = Resources.bundle?.url(forResource: "openapi", withExtension: "json").flatMap { try? Data(contentsOf: $0) }

    static func openAPIResponse() throws -> Response {
        guard let document = openAPIDocument else {
            throw Problem(.internalServerError, type: "internal", title: "Internal error", detail: "the OpenAPI document is missing from this build")
        }
        return Response(status: .ok, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(data: document)))
    }
}
