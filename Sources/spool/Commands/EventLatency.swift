import AsyncHTTPClient
import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
import NIOCore
import ServiceLifecycle
import SpoolClient
import SpoolCore
import SpoolGateway

/// The push-latency part of `spool bench`: a real gateway on a loopback port, one SSE client on
/// `/v1/events?queue=bench` and one WebSocket client subscribed to the queue. Jobs run one at a
/// time; for each, the time from its handler returning to each client parsing its `completed`
/// event (so it includes the completion commit, the fan-out and the HTTP write).
struct EventLatency {
    let spool: Spool
    let samples: Int

    func run() async throws -> (sse: [Double], ws: [Double]) {
        let logger: Logger = {
            var l = Logger(label: "bench")
            l.logLevel = .warning
            return l
        }()
        let returned = Locked<[String: ContinuousClock.Instant]>([:])
        let sse = Locked<[String: ContinuousClock.Instant]>([:])
        let ws = Locked<[String: ContinuousClock.Instant]>([:])
        spool.register(AnyJobHandler(kind: "bench.noop") { _, context in
            let now = ContinuousClock.now
            returned.withLock { $0[context.id.description] = now }
            return nil
        })
        let gateway = try await BenchGateway.start(spool, workers: true)
        defer { gateway.task.cancel() }  // on an early exit
        let port = gateway.port

        let sseReady = Locked(false), wsReady = Locked(false)
        let clients = Task {
            try await withThrowingDiscardingTaskGroup { group in
                group.addTask {
                    var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)/v1/events?queue=bench")
                    request.headers.add(name: "Accept", value: "text/event-stream")
                    let response = try await HTTPClient.shared.execute(request, timeout: .hours(1))
                    sseReady.withLock { $0 = true }
                    var parser = ServerSentEventParser()
                    for try await chunk in response.body {
                        for event in parser.feed(chunk.readableBytesView) where event.type == "state" {
                            let now = ContinuousClock.now
                            if let id = Self.completedJob(inJSON: event.data) { sse.withLock { $0[id] = now } }
                        }
                    }
                }
                group.addTask {
                    try await WebSocketClient.connect(url: "ws://127.0.0.1:\(port)/v1/ws", logger: logger) { inbound, outbound, _ in
                        try await outbound.write(.text(#"{"type": "subscribe", "queues": ["bench"]}"#))
                        for try await message in inbound.messages(maxSize: 1 << 20) {
                            let now = ContinuousClock.now
                            guard case .text(let text) = message else { continue }
                            if text.contains("\"subscribed\"") { wsReady.withLock { $0 = true } }
                            if let id = Self.completedJob(inJSON: text) { ws.withLock { $0[id] = now } }
                        }
                    }
                }
            }
        }
        defer { clients.cancel() }
        let start = ContinuousClock.now
        while !(sseReady.withLock { $0 } && wsReady.withLock { $0 }) {
            guard ContinuousClock.now - start < .seconds(10) else { throw CLIError("the event clients did not connect") }
            try await Task.sleep(for: .milliseconds(10))
        }
        try await Task.sleep(for: .milliseconds(100))

        var sseLatencies: [Double] = [], wsLatencies: [Double] = []
        for _ in 0..<samples {
            let id = try await spool.enqueue(NewJob(queue: "bench", kind: "bench.noop")).job.id.description
            let deadline = ContinuousClock.now + .seconds(10)
            while sse.withLock({ $0[id] }) == nil || ws.withLock({ $0[id] }) == nil {
                guard ContinuousClock.now < deadline else { throw CLIError("no event for job \(id) within 10 s") }
                try await Task.sleep(for: .microseconds(200))
            }
            guard let done = returned.withLock({ $0[id] }) else { throw CLIError("job \(id) did not run") }
            sseLatencies.append((sse.withLock { $0[id]! } - done).seconds * 1000)
            wsLatencies.append((ws.withLock { $0[id]! } - done).seconds * 1000)
        }
        clients.cancel()
        await gateway.stop()
        return (sseLatencies, wsLatencies)
    }

    /// The job id of a `completed` state event (an SSE event's data, or a WebSocket message).
    static func completedJob(inJSON text: String) -> String? {
        guard text.contains("\"completed\"") else { return nil }
        var value = JSONValue(json: Data(text.utf8))
        if case .object(let o)? = value, case .object(let event)? = o["event"] { value = .object(event) }
        guard case .object(let e)? = value, e["state"] == "completed", case .string(let id)? = e["job_id"] else { return nil }
        return id
    }
}
