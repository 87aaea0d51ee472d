import Foundation
import HTTPTypes
import Hummingbird
import ServiceLifecycle
import SpoolCore
import Synchronization

/// `GET /v1/events/summary?queue=&interval_ms=`: what changed, at most once per interval
/// (default one second), for pages that only need to know when to read again (the dashboard).
/// Each message is `event: summary` with the number of events per queue and per state or
/// type, and the `seq` of the last one as its id. It costs the gateway one small write per
/// interval per client, where the full feed costs one per event: ten dashboards on a busy
/// gateway barely register. There is no replay: after a reconnect the page reads its data
/// again.
struct EventSummaryRoutes {
    let gateway: Gateway

    struct Summary: Encodable {
        var events = 0
        /// Queue → `completed`, `failed`, ..., `progress`, `deleted` → count.
        var queues: [String: [String: Int]] = [:]
    }

    func register(on api: RouterGroup<SpoolRequestContext>) {
        api.get("events/summary") { request, context in
            let principal = try context.require(.read)
            let query = request.uri.queryParameters
            if let queue = query["queue"] { try NewJob.validateQueue(String(queue)) }
            var interval = Duration.seconds(1)
            if let text = query["interval_ms"] {
                guard let ms = Int(String(text)), (100...60_000).contains(ms) else {
                    throw Problem.validation("interval_ms", "must be 100 to 60000")
                }
                interval = .milliseconds(ms)
            }
            let every = interval
            let filter = EventFilter(tenant: principal.tenantFilter, queues: query["queue"].map { [String($0)] })
            let hub = gateway.events
            let keepAlive = gateway.configuration.keepAlive
            let headers: HTTPFields = [.contentType: "text/event-stream", .cacheControl: "no-cache", .init("X-Accel-Buffering")!: "no"]
            return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                // Counted as the hub publishes (no stream and no task per event), read once per
                // interval. Made here, not in the handler: a body that never runs (the client
                // left before the head was written) must not leave a tally behind.
                let tally = hub.tally(filter)
                defer { tally.cancel() }
                // Ends on graceful shutdown (the client reconnects elsewhere), like the full feed.
                let stopping = Doorbell(), stopped = Atomic<Bool>(false)
                try await withGracefulShutdownHandler {
                    var lastWrite = ContinuousClock.now
                    // A first line at once, so the client knows the stream is up.
                    try await writer.write(ByteBuffer(string: ": summaries every \(every.seconds) s\n\n"))
                    while !stopped.load(ordering: .relaxed) && !Task.isCancelled {
                        await stopping.wait(timeout: every)
                        let counts = tally.take()
                        if counts.events > 0 {
                            let data = String(decoding: try JSONEncoder().encode(Summary(events: counts.events, queues: counts.queues)), as: UTF8.self)
                            try await writer.write(ByteBuffer(string: "id: \(counts.lastSeq)\nevent: summary\ndata: \(data)\n\n"))
                            lastWrite = .now
                        } else if ContinuousClock.now - lastWrite >= keepAlive {
                            try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                            lastWrite = .now
                        }
                    }
                } onGracefulShutdown: {
                    stopped.store(true, ordering: .relaxed)
                    stopping.ring()
                }
                try? await writer.finish(nil)
            })
        }
    }
}
