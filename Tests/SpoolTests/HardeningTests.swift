import AsyncHTTPClient
import Foundation
import NIOCore
import SpoolCore
import SpoolDemoJobs
import SpoolGateway
import Synchronization
import Testing

/// What an attacker or a bad job could do to the gateway, and must not.
@Suite("Hardening", .serialized)
struct HardeningTests {
    @Test("a web page cannot drive a token-less gateway: cross-site and rebound requests are refused, the queue keeps its job")
    func crossSiteRequestsRefused() async throws {
        try await TestGateway.with(workers: false) { gw in
            let id = try #require(try await gw.post("/v1/jobs", #"{"kind":"demo.noop"}"#).string("id"))
            let own = "http://127.0.0.1:\(gw.port)"
            let attacks: [(String, [(String, String)])] = [
                ("a foreign Origin", [("Origin", "https://evil.example")]),
                ("Origin: null", [("Origin", "null")]),
                ("another port of this host", [("Origin", "http://127.0.0.1:1")]),
                ("Sec-Fetch-Site: cross-site", [("Sec-Fetch-Site", "cross-site")]),
                ("Sec-Fetch-Site: same-site", [("Sec-Fetch-Site", "same-site")]),
                ("a rebound name as Host", [("Host", "evil.example:\(gw.port)")]),
                ("a rebound name with the gateway's own Origin", [("Host", "evil.example"), ("Origin", "http://evil.example")]),
            ]
            for (name, headers) in attacks {
                for path in ["/v1/queues/default/purge", "/v1/queues/default/pause", "/v1/jobs/\(id)/cancel"] {
                    let answer = try await gw.request(.POST, path, headers: headers)
                    #expect(answer.status == 403 && answer.problemType == "urn:spool:problem:cross-site", "\(name) on \(path): \(answer.status)")
                }
                let delete = try await gw.request(.DELETE, "/v1/jobs/\(id)", headers: headers)
                #expect(delete.status == 403, "\(name) on DELETE")
            }
            let jobID = try #require(JobID(id))
            #expect(try await gw.store.mustGet(jobID).state == .pending, "the job is still there")
            #expect(try await gw.spool.queueOverview(tenant: nil).first { $0.name == "default" }?.paused == false)
            // The gateway's own pages, and clients that are not browsers, are served.
            #expect(try await gw.request(.GET, "/v1/jobs/\(id)", headers: [("Origin", own), ("Sec-Fetch-Site", "same-origin")]).status == 200)
            #expect(try await gw.request(.GET, "/v1/jobs/\(id)", headers: [("Host", "localhost:\(gw.port)")]).status == 200)
            #expect(try await gw.request(.GET, "/v1/jobs/\(id)", headers: [("Host", "[::1]:\(gw.port)")]).status == 200)
            let purged = try await gw.request(.POST, "/v1/queues/default/purge")
            #expect(purged.status == 200 && purged["purged"] == .number(1))
        }
    }

    @Test("with tokens, a foreign Origin is refused too, but any Host is served")
    func crossSiteWithTokens() async throws {
        try await TestGateway.with(tokens: testTokens, workers: false) { gw in
            let evil = try await gw.request(.POST, "/v1/queues/default/purge", token: tokenOps, headers: [("Origin", "https://evil.example")])
            #expect(evil.status == 403 && evil.problemType == "urn:spool:problem:cross-site")
            let proxied = try await gw.request(.GET, "/v1/queues", token: tokenOps, headers: [("Host", "spool.internal.example")])
            #expect(proxied.status == 200)
        }
    }

    @Test("a method an endpoint lacks answers 405 with Allow")
    func methodNotAllowed() async throws {
        try await TestGateway.with(workers: false) { gw in
            let put = try await gw.request(.PUT, "/v1/jobs", json: "{}")
            #expect(put.status == 405 && put.problemType == "urn:spool:problem:method-not-allowed")
            #expect(put.headers.first(name: "allow") == "POST, GET")
            let get = try await gw.request(.GET, "/v1/queues/default/purge")
            #expect(get.status == 405 && get.headers.first(name: "allow") == "POST")
            let job = try await gw.request(.PATCH, "/v1/jobs/0190f8f0-0000-7000-8000-000000000000", json: "{}")
            #expect(job.status == 405 && job.headers.first(name: "allow") == "GET, DELETE")
            #expect(try await gw.request(.GET, "/v1/nothing-here").status == 404)
            // A literal segment is not a parameter: /v1/jobs/batch only has POST.
            #expect(try await gw.request(.GET, "/v1/jobs/batch").headers.first(name: "allow") == "POST")
        }
    }

    @Test("queue switches: unknown or malformed queues are 404, names are percent-decoded; 401 and 426 say what to do")
    func queueNamesAndHeaders() async throws {
        try await TestGateway.with(workers: false, engine: { $0.queues["E0A:MU"] = QueueConfiguration() }) { gw in
            for path in ["/v1/queues/nope/pause", "/v1/queues/nope/resume", "/v1/queues/nope/purge", "/v1/queues/nope/retry-failed",
                         "/v1/queues/%C2%84/pause", "/v1/queues/a%20b/purge"] {
                let answer = try await gw.request(.POST, path)
                #expect(answer.status == 404 && answer.problemType == "urn:spool:problem:not-found", "\(path): \(answer.status)")
            }
            #expect(!(try await gw.spool.queueOverview(tenant: nil).contains { $0.name == "nope" }), "no queue was made by pausing it")
            let paused = try await gw.request(.POST, "/v1/queues/E0A%3AMU/pause")
            #expect(paused.status == 200 && paused.string("name") == "E0A:MU")
            let ws = try await gw.get("/v1/ws")
            #expect(ws.status == 426 && ws.headers.first(name: "upgrade") == "websocket")
        }
        try await TestGateway.with(tokens: testTokens, workers: false) { gw in
            let answer = try await gw.get("/v1/jobs")
            #expect(answer.status == 401 && answer.headers.first(name: "www-authenticate")?.hasPrefix("Bearer") == true)
        }
    }

    @Test("SIGTERM ends open event streams: the process exits at once, not when its clients leave")
    func shutdownEndsStreams() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let server = try SpoolProcess(["serve", "--database", dir.file("s.sqlite"), "--port", "0", "--grace-seconds", "1"], logTo: dir.file("serve.log"))
        defer { server.signal(SIGKILL) }
        var port: Int?
        _ = try await eventually(timeout: .seconds(30)) {
            if let range = server.output.range(of: #"http://127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                port = Int(server.output[range].split(separator: ":").last ?? "")
            }
            return port != nil
        }
        let open = try #require(port, "serve did not start: \(server.output)")
        let received = Atomic<Int>(0)
        let stream = Task {
            try await readSSE(port: open, path: "/v1/events", timeout: .seconds(60)) { _ in
                received.add(1, ordering: .relaxed)
                return false
            }
        }
        // The stream is live once it has carried an event.
        #expect(await eventually(timeout: .seconds(30)) {
            _ = try? await HTTPClient.shared.execute(
                { var r = HTTPClientRequest(url: "http://127.0.0.1:\(open)/v1/jobs"); r.method = .POST
                  r.headers.add(name: "Content-Type", value: "application/json"); r.body = .bytes(ByteBuffer(string: #"{"kind":"demo.noop"}"#)); return r }(),
                timeout: .seconds(10))
            return received.load(ordering: .relaxed) > 0
        })
        let stopping = ContinuousClock.now
        server.signal(SIGTERM)
        #expect(await server.waitForExit(timeout: .seconds(10)) == 0, "still running with an open stream: \(server.output.suffix(2000))")
        #expect(ContinuousClock.now - stopping < .seconds(10))
        let ended = try await stream.value
        #expect(ended.status == 200, "the stream ended cleanly (the client resumes elsewhere)")
    }

    @Test("no payload names a file Spool writes: demo.sleep ignores a 'record' path")
    func demoSleepWritesNoFile() async throws {
        let dir = TempDir()
        defer { dir.remove() }
        let target = dir.file("written-by-a-payload")
        try FileManager.default.createDirectory(atPath: dir.path, withIntermediateDirectories: true)
        try await TestGateway.with { gw in
            let answer = try await gw.post("/v1/jobs", #"{"kind":"demo.sleep","payload":{"seconds":0.01,"steps":1,"record":"\#(target)"}}"#)
            let raw = try #require(answer.string("id"))
            let id = try #require(JobID(raw))
            #expect(try await gw.spool.waitUntilFinished(id).state == .completed)
        }
        #expect(!FileManager.default.fileExists(atPath: target), "a payload made the server write \(target)")
    }

    @Test("an SSE resume replays 25,000 missed events, none lost or repeated, then goes live")
    func losslessResume() async throws {
        try await TestGateway.with(workers: false, gateway: { $0.keepAlive = .milliseconds(200) }) { gw in
            let before = try await gw.store.lastEventSeq()
            var missed: Set<String> = []
            for _ in 0..<25 {
                let batch = try await gw.store.enqueue((0..<1000).map { _ in NewJob(kind: "demo.noop") }, defaults: [:], depthLimits: [:])
                missed.formUnion(batch.map(\.job.id.description))
            }
            let late = Task {
                try await Task.sleep(for: .seconds(1))
                return try await gw.spool.enqueue(NewJob(kind: "demo.noop")).job.id.description
            }
            let seen = Atomic<Int>(0)
            let (status, events) = try await readSSE(port: gw.port, path: "/v1/events", lastEventID: before, timeout: .seconds(90)) { _ in
                seen.add(1, ordering: .relaxed).newValue == 25_001
            }
            let lateID = try await late.value
            #expect(status == 200)
            #expect(events.count == 25_001, "got \(events.count) events")
            let ids = events.map(\.id)
            #expect(ids == ids.sorted() && Set(ids).count == ids.count, "in order, no repeats")
            let jobs = events.compactMap { $0.string("job_id") }
            #expect(Set(jobs.prefix(25_000)) == missed, "every missed job's event was replayed")
            #expect(jobs.last == lateID, "then the live event")
        }
    }

    @Test("a resume from before the retention window says events were pruned, then sends a snapshot")
    func resumeAfterPruning() async throws {
        try await TestGateway.with(workers: false, gateway: { $0.keepAlive = .milliseconds(200) }) { gw in
            let id = try #require(try await gw.post("/v1/jobs", #"{"kind":"demo.noop"}"#).string("id"))
            let first = try await gw.store.lastEventSeq()
            _ = try await gw.post("/v1/jobs", #"{"kind":"demo.noop"}"#)
            #expect(try await gw.store.pruneEvents(before: Date().addingTimeInterval(60), limit: 1000) > 0)
            #expect(try await gw.store.prunedEventSeq() >= first)
            let (_, jobEvents) = try await readSSE(port: gw.port, path: "/v1/jobs/\(id)/events", lastEventID: first - 1, timeout: .seconds(10)) {
                $0.type == "snapshot"
            }
            #expect(jobEvents.map(\.type).prefix(2) == ["pruned", "snapshot"], "\(jobEvents.map(\.type))")
            #expect(jobEvents.first?.data.objectValue?["pruned_through"] != nil)
            let (_, feed) = try await readSSE(port: gw.port, path: "/v1/events", lastEventID: first - 1, timeout: .seconds(10)) { _ in true }
            #expect(feed.first?.type == "pruned")
            // A resume from within the window gets no notice: the next event is a job's.
            let now = try await gw.store.lastEventSeq()
            let later = Task {
                try await Task.sleep(for: .milliseconds(500))
                _ = try await gw.post("/v1/jobs", #"{"kind":"demo.noop"}"#)
            }
            let (_, fresh) = try await readSSE(port: gw.port, path: "/v1/events", lastEventID: now, timeout: .seconds(10)) { _ in true }
            try await later.value
            #expect(!fresh.contains { $0.type == "pruned" })
        }
    }
}

extension JSONValue {
    var objectValue: [String: JSONValue]? { if case .object(let o) = self { o } else { nil } }
}
