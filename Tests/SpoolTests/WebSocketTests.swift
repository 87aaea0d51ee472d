import Foundation
import HTTPTypes
import HummingbirdWSClient
import Logging
import SpoolCore
import SpoolGateway
import Synchronization
import Testing

/// Runs `body`, failing if it takes longer than `timeout`.
func withTimeout<T: Sendable>(_ timeout: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask { try await Task.sleep(for: timeout); return nil }
        let first = try await group.next()!
        group.cancelAll()
        guard let value = first else { throw GatewayError("timed out after \(timeout)") }
        return value
    }
}

/// The JSON messages one WebSocket client received.
final class Inbox: Sendable {
    private let messages = Mutex<[[String: JSONValue]]>([])
    func add(_ m: [String: JSONValue]) { messages.withLock { $0.append(m) } }
    var all: [[String: JSONValue]] { messages.withLock { $0 } }
    /// Event documents received, as (job id, type, state).
    var events: [(job: String, type: String, state: String?)] {
        all.compactMap { m in
            guard m["type"] == "event", case .object(let e)? = m["event"], case .string(let job)? = e["job_id"], case .string(let type)? = e["type"] else { return nil }
            if case .string(let state)? = e["state"] { return (job, type, state) }
            return (job, type, nil)
        }
    }
}

@Suite("WebSocket", .serialized)
struct WebSocketTests {
    static let secret = "spool_ws_test_token"
    static let tokens = [APIToken(name: "t", tenant: "acme", scopes: [.enqueue, .read], secret: secret)]
    static var logger: Logger {
        var l = Logger(label: "ws-client")
        l.logLevel = .warning
        return l
    }

    static func withQueue() -> ((inout EngineConfiguration) -> Void, (inout GatewayConfiguration) -> Void) {
        ({ $0.queues["ws"] = QueueConfiguration(concurrency: 4) }, { _ in })
    }

    @Test("a client receives the events of the two jobs it subscribed to, and none of a third")
    func twoOfThree() async throws {
        let (engine, gateway) = Self.withQueue()
        try await TestGateway.with(tokens: Self.tokens, engine: engine, gateway: gateway) { gw in
            try await gw.spool.pause(queue: "ws")
            var ids: [String] = []
            for _ in 0..<3 {
                let answer = try await gw.post("/v1/jobs", #"{"queue": "ws", "kind": "demo.sleep", "payload": {"seconds": 0.2, "steps": 2}}"#, token: Self.secret)
                ids.append(try #require(answer.string("id")))
            }
            let (a, b, c) = (ids[0], ids[1], ids[2])
            let inbox = Inbox()
            let port = gw.port
            let spool = gw.spool
            try await withTimeout(.seconds(30)) {
                let config = WebSocketClientConfiguration(additionalHeaders: [.secWebSocketProtocol: "spool.v1, spool.bearer.\(Self.secret)"])
                try await WebSocketClient.connect(url: "ws://127.0.0.1:\(port)/v1/ws", configuration: config, logger: Self.logger) { inbound, outbound, _ in
                    try await outbound.write(.text(#"{"type": "subscribe", "jobs": ["\#(a)", "\#(b)"]}"#))
                    try await outbound.write(.text(#"{"type": "ping", "id": 7}"#))
                    try await outbound.write(.text(#"{"type": "dance"}"#))
                    try await outbound.write(.text(#"{"type": "subscribe", "jobs": ["\#(a)", "not-a-uuid"]}"#))
                    try await outbound.write(.text(#"{"type": "subscribe", "jobs": ["\#(c)"], "after": 1e300}"#))  // past Int64
                    var resumed = false
                    for try await message in inbound.messages(maxSize: 1 << 20) {
                        guard case .text(let text) = message, case .object(let m)? = JSONValue(json: Data(text.utf8)) else { continue }
                        inbox.add(m)
                        if m["type"] == "subscribed" && !resumed {
                            resumed = true
                            try await spool.resume(queue: "ws")
                        }
                        let done = Set(inbox.events.filter { $0.state == "completed" }.map(\.job))
                        if done.isSuperset(of: [a, b]) {
                            // Give the third job time to finish too, so its events would have arrived.
                            _ = try await eventually { try await spool.job(JobID(c)!)?.state == .completed }
                            try await Task.sleep(for: .milliseconds(200))
                            break
                        }
                    }
                    try await outbound.close(.normalClosure, reason: nil)
                }
            }
            let events = inbox.events
            #expect(Set(events.map(\.job)) == [a, b], "events of \(Set(events.map(\.job)))")
            for job in [a, b] {
                let states = events.filter { $0.job == job && $0.type == "state" }.compactMap(\.state)
                #expect(states == ["processing", "completed"], "\(job): \(states)")
                #expect(events.contains { $0.job == job && $0.type == "progress" })
            }
            let all = inbox.all
            let snapshots = all.filter { $0["type"] == "snapshot" }
            #expect(snapshots.count == 2)
            for snapshot in snapshots {
                guard case .object(let job)? = snapshot["job"] else { Issue.record("snapshot without job"); continue }
                #expect(job["state"] == "pending" && [a, b].contains { job["id"] == .string($0) })
            }
            #expect(all.contains { $0["type"] == "pong" && $0["id"]?.doubleValue == 7 })
            #expect(all.filter { $0["type"] == "error" && $0["error"] == "bad_message" }.count == 3)
            #expect(all.contains { m in
                guard m["type"] == "error", case .string(let detail)? = m["detail"] else { return false }
                return detail.contains("jobs[1]: 'not-a-uuid' is not a job id")
            })
            #expect(try await eventually { gw.events.subscriberCount == 0 }, "the session's subscription was not released")
        }
    }

    @Test("queue subscriptions, unsubscribe, other tenants' jobs, and resuming with 'after'")
    func queuesAndResume() async throws {
        let other = APIToken(name: "o", tenant: "globex", scopes: [.enqueue, .read], secret: "spool_other")
        let (engine, gateway) = Self.withQueue()
        try await TestGateway.with(tokens: Self.tokens + [other], engine: engine, gateway: gateway) { gw in
            let foreign = try await gw.post("/v1/jobs", #"{"queue": "ws", "kind": "demo.noop"}"#, token: "spool_other")
            let foreignID = try #require(foreign.string("id"))
            let first = try await gw.post("/v1/jobs", #"{"queue": "ws", "kind": "demo.noop"}"#, token: Self.secret)
            let firstID = try #require(first.string("id"))
            #expect(try await eventually { try await gw.spool.job(JobID(firstID)!)?.state == .completed })
            let inbox = Inbox()
            let port = gw.port
            try await withTimeout(.seconds(30)) {
                // The token in the query string, as a browser without subprotocol support would.
                try await WebSocketClient.connect(url: "ws://127.0.0.1:\(port)/v1/ws?access_token=\(Self.secret)", logger: Self.logger) { inbound, outbound, _ in
                    // Replay from the start: the finished job's events come from the log.
                    try await outbound.write(.text(#"{"type": "subscribe", "jobs": ["\#(firstID)", "\#(foreignID)"], "after": 0}"#))
                    try await outbound.write(.text(#"{"type": "subscribe", "queues": ["ws"]}"#))
                    var iterator = inbound.messages(maxSize: 1 << 20).makeAsyncIterator()
                    var subscribedCount = 0
                    while subscribedCount < 2, let message = try await iterator.next() {
                        guard case .text(let text) = message, case .object(let m)? = JSONValue(json: Data(text.utf8)) else { continue }
                        inbox.add(m)
                        if m["type"] == "subscribed" { subscribedCount += 1 }
                    }
                    _ = try await gw.post("/v1/jobs", #"{"queue": "ws", "kind": "demo.noop"}"#, token: Self.secret)
                    _ = try await gw.post("/v1/jobs", #"{"queue": "ws", "kind": "demo.noop"}"#, token: "spool_other")
                    var completed = 0
                    while completed < 1, let message = try await iterator.next() {
                        guard case .text(let text) = message, case .object(let m)? = JSONValue(json: Data(text.utf8)) else { continue }
                        inbox.add(m)
                        if case .object(let e)? = m["event"], e["state"] == "completed", e["job_id"] != .string(firstID) { completed += 1 }
                    }
                    try await outbound.write(.text(#"{"type": "unsubscribe", "queues": ["ws"]}"#))
                    while let message = try await iterator.next() {
                        guard case .text(let text) = message, case .object(let m)? = JSONValue(json: Data(text.utf8)) else { continue }
                        inbox.add(m)
                        if m["type"] == "subscribed" { break }
                    }
                    try await outbound.close(.normalClosure, reason: nil)
                }
            }
            let all = inbox.all
            #expect(all.contains { $0["type"] == "error" && $0["error"] == "not_found" && $0["job_id"] == .string(foreignID) })
            let replayed = inbox.events.filter { $0.job == firstID }.compactMap(\.state)
            #expect(replayed == ["pending", "processing", "completed"], "replayed \(replayed)")
            // Only the caller's tenant's jobs, and the queue's new job did arrive.
            let tenants = Set(inbox.events.map(\.job))
            #expect(!tenants.contains(foreignID))
            #expect(tenants.count == 2)
            guard case .array(let queues)? = all.last?["queues"] else { Issue.record("no final subscribed message"); return }
            #expect(queues.isEmpty)
        }
    }

    @Test("without tokens, a web page of another origin cannot open the socket")
    func refusesForeignOrigins() async throws {
        try await TestGateway.with { gw in
            let port = gw.port
            /// Sends a WebSocket handshake over a plain socket (clients add their own Origin)
            /// and returns the status code of the answer.
            func handshake(origin: String?) throws -> Int {
                let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                defer { close(fd) }
                var address = sockaddr_in()
                address.sin_family = sa_family_t(AF_INET)
                address.sin_port = in_port_t(UInt16(port).bigEndian)
                address.sin_addr.s_addr = inet_addr("127.0.0.1")
                var timeout = timeval(tv_sec: 10, tv_usec: 0)
                setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                let connected = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
                }
                guard connected == 0 else { throw GatewayError("cannot connect") }
                var request = "GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                request += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                if let origin { request += "Origin: \(origin)\r\n" }
                request += "\r\n"
                _ = request.withCString { send(fd, $0, strlen($0), 0) }
                var buffer = [UInt8](repeating: 0, count: 512)
                let n = recv(fd, &buffer, buffer.count, 0)
                let head = String(decoding: buffer.prefix(max(0, n)), as: UTF8.self)
                return Int(head.split(separator: " ").dropFirst().first ?? "") ?? -1
            }
            func connects(origin: String?) async -> Bool { (try? handshake(origin: origin)) == 101 }
            #expect(await connects(origin: nil), "a client that is not a browser connects")
            #expect(await connects(origin: "http://127.0.0.1:\(port)"), "the gateway's own origin connects")
            #expect(!(await connects(origin: "https://evil.example")), "a foreign page must not connect")
        }
    }

    @Test("a connection without a valid token is closed at once with 4401 and a reason (4403 without the read scope); it reads nothing")
    func refusesUnauthenticated() async throws {
        let tokens = Self.tokens + [APIToken(name: "w", tenant: "acme", scopes: [.worker], secret: "worker-only")]
        try await TestGateway.with(tokens: tokens) { gw in
            let port = gw.port
            let cases: [(String, UInt16, String)] = [
                ("ws://127.0.0.1:\(port)/v1/ws", 4401, "unauthorized"),
                ("ws://127.0.0.1:\(port)/v1/ws?access_token=wrong", 4401, "unauthorized"),
                ("ws://127.0.0.1:\(port)/v1/ws?access_token=worker-only", 4403, "read"),
            ]
            for (url, code, reason) in cases {
                let received = Mutex(0)
                let close = try await withTimeout(.seconds(10)) {
                    try await WebSocketClient.connect(url: url, logger: Self.logger) { inbound, _, _ in
                        for try await _ in inbound.messages(maxSize: 1 << 16) { received.withLock { $0 += 1 } }
                    }
                }
                #expect(close?.closeCode == .unknown(code) && close?.reason?.contains(reason) == true, "\(url): \(String(describing: close))")
                #expect(received.withLock { $0 } == 0, "\(url) got messages")
            }
            // A plain GET is a problem document, not a silent 404.
            let plain = try await gw.get("/v1/ws", token: Self.secret)
            #expect(plain.status == 426 && plain.problemType == "urn:spool:problem:upgrade-required")
            #expect(try await gw.get("/v1/ws").status == 401)
        }
    }
}
