import AsyncHTTPClient
import Foundation
import NIOCore
import SpoolCore
import SpoolGateway
import Testing

/// One Server-Sent Event as a client parses it.
struct SSEEvent: Sendable {
    var id: Int64
    var type: String
    var data: JSONValue
    func string(_ key: String) -> String? {
        if case .object(let o) = data, case .string(let s)? = o[key] { return s }
        return nil
    }
}

/// A minimal SSE client over AsyncHTTPClient: reads events until the server ends the stream,
/// `stop` says so, or `timeout` passes.
func readSSE(
    client: HTTPClient = .shared, port: Int, path: String, token: String? = nil, lastEventID: Int64? = nil,
    timeout: Duration = .seconds(20), stop: @escaping @Sendable (SSEEvent) -> Bool = { _ in false }
) async throws -> (status: Int, events: [SSEEvent]) {
    var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(path)")
    if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
    if let lastEventID { request.headers.add(name: "Last-Event-ID", value: String(lastEventID)) }
    request.headers.add(name: "Accept", value: "text/event-stream")
    let ready = request
    return try await withThrowingTaskGroup(of: (Int, [SSEEvent])?.self) { group in
        group.addTask {
            let response = try await client.execute(ready, timeout: .seconds(Int64(timeout.components.seconds) + 5))
            guard response.status == .ok else { return (Int(response.status.code), []) }
            var events: [SSEEvent] = []
            var text = ""
            for try await buffer in response.body {
                text += String(buffer: buffer)
                while let range = text.range(of: "\n\n") {
                    let block = String(text[..<range.lowerBound])
                    text = String(text[range.upperBound...])
                    var id: Int64 = 0, type = "message", data = ""
                    for line in block.split(separator: "\n") {
                        if line.hasPrefix(":") { continue }
                        if line.hasPrefix("id: ") { id = Int64(line.dropFirst(4)) ?? 0 }
                        if line.hasPrefix("event: ") { type = String(line.dropFirst(7)) }
                        if line.hasPrefix("data: ") { data += line.dropFirst(6) }
                    }
                    if data.isEmpty { continue }
                    let event = SSEEvent(id: id, type: type, data: JSONValue(json: Data(data.utf8)) ?? .null)
                    events.append(event)
                    if stop(event) { return (200, events) }
                }
            }
            return (200, events)
        }
        group.addTask {
            try await Task.sleep(for: timeout)
            return nil
        }
        let first = try await group.next()!
        group.cancelAll()
        guard let result = first else { throw GatewayError("the event stream did not end within \(timeout)") }
        return result
    }
}

@Suite("Server-Sent Events", .serialized, .timeLimit(.minutes(5)))
struct SSETests {
    @Test("a client follows a job from enqueue to completion, and resumes with Last-Event-ID without loss or repeat")
    func followJob() async throws {
        try await TestGateway.with { gw in
            let id = try #require(try await gw.post("/v1/jobs", #"{"kind":"demo.sleep","payload":{"seconds":0.6,"steps":3}}"#).string("id"))
            let (status, events) = try await readSSE(port: gw.port, path: "/v1/jobs/\(id)/events")
            #expect(status == 200)
            #expect(events.first?.type == "snapshot")
            #expect(events.first?.string("id") == id)
            let last = try #require(events.last)
            #expect(last.type == "state" && last.string("state") == "completed")
            if case .object(let o) = last.data, case .object(let result)? = o["result"] { #expect(result["slept_seconds"] == .number(0.6)) }
            else { Issue.record("the terminal event has no result") }
            let live = events.dropFirst()
            #expect(live.map(\.id) == live.map(\.id).sorted() && Set(live.map(\.id)).count == live.count)
            #expect(live.contains { $0.type == "progress" })
            #expect(live.allSatisfy { $0.string("job_id") == id })

            // Reconnect after the first live event: exactly the rest comes again.
            let resumeFrom = try #require(live.first).id
            let (_, resumed) = try await readSSE(port: gw.port, path: "/v1/jobs/\(id)/events", lastEventID: resumeFrom)
            #expect(resumed.map(\.id) == live.dropFirst().map(\.id))
            #expect(resumed.last?.string("state") == "completed")

            // A finished job: the snapshot, then the stream ends at once.
            let (_, again) = try await readSSE(port: gw.port, path: "/v1/jobs/\(id)/events", timeout: .seconds(5))
            #expect(again.count == 1 && again.first?.type == "snapshot" && again.first?.string("state") == "completed")
            #expect(try await gw.get("/v1/jobs/\(JobID.make())/events").status == 404)
        }
    }

    @Test("the event feed shows only the caller's tenant, filtered by queue")
    func feedIsTenantFiltered() async throws {
        try await TestGateway.with(tokens: testTokens, engine: { $0.queues["mail"] = QueueConfiguration() }) { gw in
            let seq = try await gw.store.lastEventSeq()
            let mine = try #require(try await gw.post("/v1/jobs", #"{"kind":"demo.noop"}"#, token: tokenA).string("id"))
            _ = try await gw.post("/v1/jobs", #"{"kind":"demo.noop"}"#, token: tokenB)
            _ = try await gw.post("/v1/jobs", #"{"queue":"mail","kind":"demo.noop"}"#, token: tokenA)
            let done = try #require(JobID(mine))
            _ = try await gw.spool.waitUntilFinished(done)
            // Replay from before the enqueues: tenant A, queue default only.
            let (status, events) = try await readSSE(port: gw.port, path: "/v1/events?queue=default", token: tokenA, lastEventID: seq, timeout: .seconds(10)) {
                $0.string("state") == "completed"
            }
            #expect(status == 200)
            #expect(events.allSatisfy { $0.string("job_id") == mine })
            #expect(events.map { $0.string("state") } == ["pending", "processing", "completed"])
            #expect(try await gw.get("/v1/events", token: "nope").status == 401)
        }
    }

    @Test("1,000 concurrent subscribers on one process all receive their job's terminal event")
    func thousandSubscribers() async throws {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = limit.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: .init(
            timeout: .init(connect: .seconds(30)),  // 1,000 connects at once on a busy machine
            connectionPool: .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 1200)))
        // Shut the client down whatever happens: an HTTPClient dropped without it traps (in
        // debug builds), which would hide the test's own error behind a crash.
        do {
            try await TestGateway.with(engine: { $0.defaultQueue.concurrency = 50 }) { gw in
                try await gw.spool.pause(queue: "default")
                let jobs = try await gw.spool.enqueue((0..<1000).map { _ in NewJob(kind: "demo.noop") }).map(\.job.id)
                let results = try await withThrowingTaskGroup(of: String?.self) { group in
                    for id in jobs {
                        group.addTask {
                            // An error is an outcome to count, so that one stream's failure is
                            // reported with the others' rather than cancelling them all.
                            do {
                                let (status, events) = try await readSSE(client: client, port: gw.port, path: "/v1/jobs/\(id)/events", timeout: .seconds(90))
                                return events.last?.string("state") ?? "status \(status), \(events.count) events"
                            } catch {
                                return "error: \(error)"
                            }
                        }
                    }
                    // Resume once every stream is open.
                    group.addTask {
                        _ = await eventually(timeout: .seconds(60)) { gw.events.subscriberCount >= 1000 }
                        try await gw.spool.resume(queue: "default")
                        return nil
                    }
                    return try await group.reduce(into: [String?]()) { $0.append($1) }
                }
                let outcomes = Dictionary(results.compactMap { $0 }.map { ($0, 1) }, uniquingKeysWith: +)
                #expect(outcomes == ["completed": 1000], "stream outcomes: \(outcomes)")
            }
        } catch {
            try? await client.shutdown()
            throw error
        }
        try await client.shutdown()
    }
}
