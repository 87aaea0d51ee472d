import Crypto
import Foundation
import SpoolCore
import SpoolGateway
import Testing

/// Tokens for the tenant tests: `a` and `b` can enqueue and read their own jobs; `reader` can
/// only read; `ops` is an admin.
let tokenA = "secret-a", tokenB = "secret-b", tokenReader = "secret-reader", tokenOps = "secret-ops"
let testTokens = [
    APIToken(name: "a", tenant: "tenant-a", scopes: [.enqueue, .read], secret: tokenA),
    APIToken(name: "b", tenant: "tenant-b", scopes: [.enqueue, .read], secret: tokenB),
    APIToken(name: "reader", tenant: "tenant-a", scopes: [.read], secret: tokenReader),
    APIToken(name: "ops", tenant: "ops", scopes: [.admin], secret: tokenOps),
]

@Suite("HTTP gateway", .serialized, .timeLimit(.minutes(5)))
struct GatewayTests {
    @Test("POST /v1/jobs answers 202 with Location and the job id, after the job is stored")
    func enqueue() async throws {
        try await TestGateway.with(workers: false) { gw in
            let answer = try await gw.post("/v1/jobs", #"{"kind":"demo.sleep","payload":{"seconds":1},"priority":3,"tags":["x"]}"#)
            #expect(answer.status == 202)
            let id = try #require(answer.string("id"))
            #expect(answer.headers.first(name: "location") == "/v1/jobs/\(id)")
            #expect(answer.string("state") == "pending" && answer.string("queue") == "default" && answer.string("kind") == "demo.sleep")
            #expect(answer.string("created_at") != nil)
            #expect(answer["links"] == .object(["self": .string("/v1/jobs/\(id)"), "events": .string("/v1/jobs/\(id)/events")]))
            // Stored before the answer: a new store connection sees it.
            let jobID = try #require(JobID(id))
            let stored = try #require(try await gw.store.job(jobID, tenant: nil))
            #expect(stored.priority == 3 && stored.tags == ["x"])
            let status = try await gw.get("/v1/jobs/\(id)")
            #expect(status.status == 200 && status.string("state") == "pending" && status["payload"] == .object(["seconds": .number(1)]))
        }
    }

    @Test("payloads keep large integers exact")
    func payloadPrecision() async throws {
        try await TestGateway.with(workers: false) { gw in
            let body = #"{"kind":"demo.noop","payload":{"id":9007199254740993,"big":1234567890123456789,"f":0.1}}"#
            let id = try #require(try await gw.post("/v1/jobs", body).string("id"))
            let text = String(decoding: try await gw.get("/v1/jobs/\(id)").body, as: UTF8.self)
            #expect(text.contains("9007199254740993") && text.contains("1234567890123456789") && text.contains("0.1"))
        }
    }

    @Test("a job runs to completion and its status document shows progress and result")
    func statusToCompletion() async throws {
        try await TestGateway.with { gw in
            let id = try #require(try await gw.post("/v1/jobs", #"{"kind":"demo.flaky","payload":{"fail_times":1},"max_attempts":3}"#).string("id"))
            let jobID = try #require(JobID(id))
            _ = try await gw.spool.waitUntilFinished(jobID)
            let doc = try await gw.get("/v1/jobs/\(id)")
            #expect(doc.string("state") == "completed")
            #expect(doc["attempt"] == .number(2) && doc["result"] == .object(["succeeded_on_attempt": .number(2)]))
            guard case .array(let errors)? = doc["errors"] else { Issue.record("no errors array"); return }
            #expect(errors.count == 1)
            #expect(doc.string("started_at") != nil && doc.string("finished_at") != nil)
        }
    }

    @Test("idempotency: replay answers the same job with Idempotent-Replayed; a different body is 409")
    func idempotency() async throws {
        try await TestGateway.with(workers: false) { gw in
            let first = try await gw.post("/v1/jobs", #"{"kind":"demo.noop","idempotency_key":"k1"}"#)
            #expect(first.status == 202)
            let replay = try await gw.post("/v1/jobs", #"{"kind":"demo.noop"}"#, headers: [("Idempotency-Key", "k1")])
            #expect(replay.status == 200 && replay.headers.first(name: "idempotent-replayed") == "true")
            #expect(replay.string("id") == first.string("id"))
            let conflict = try await gw.post("/v1/jobs", #"{"kind":"demo.noop","payload":{"other":true}}"#, headers: [("Idempotency-Key", "k1")])
            #expect(conflict.status == 409 && conflict.problemType == "urn:spool:problem:idempotency-conflict")
            #expect(conflict.string("existing_job") == first.string("id"))
            let mismatch = try await gw.post("/v1/jobs", #"{"kind":"demo.noop","idempotency_key":"x"}"#, headers: [("Idempotency-Key", "y")])
            #expect(mismatch.status == 422)
            #expect(try await gw.store.list(JobFilter(limit: 10)).jobs.count == 1)
        }
    }

    @Test("50 concurrent POSTs with one idempotency key create exactly one job")
    func concurrentIdempotency() async throws {
        try await TestGateway.with(workers: false) { gw in
            let answers = try await withThrowingTaskGroup(of: HTTPAnswer.self) { group in
                for _ in 0..<50 {
                    group.addTask { try await gw.post("/v1/jobs", #"{"kind":"demo.noop","payload":{"n":1}}"#, headers: [("Idempotency-Key", "once")]) }
                }
                return try await group.reduce(into: [HTTPAnswer]()) { $0.append($1) }
            }
            #expect(answers.filter { $0.status == 202 }.count == 1)
            #expect(answers.filter { $0.status == 200 }.count == 49)
            #expect(Set(answers.compactMap { $0.string("id") }).count == 1)
            #expect(try await gw.store.list(JobFilter(limit: 100)).jobs.count == 1)
        }
    }

    @Test("batch: all or nothing, with a size limit")
    func batch() async throws {
        try await TestGateway.with(workers: false, gateway: { $0.maxBatchJobs = 5 }) { gw in
            let ok = try await gw.post("/v1/jobs/batch", #"{"jobs":[{"kind":"demo.noop"},{"kind":"demo.noop","priority":2},{"kind":"demo.sleep","payload":{"seconds":0}}]}"#)
            #expect(ok.status == 202)
            guard case .array(let jobs)? = ok["jobs"] else { Issue.record("no jobs"); return }
            #expect(jobs.count == 3)
            let bad = try await gw.post("/v1/jobs/batch", #"{"jobs":[{"kind":"demo.noop"},{"kind":"demo.noop","priority":"high"}]}"#)
            #expect(bad.status == 422 && bad.string("detail")?.hasPrefix("jobs[1].") == true)
            let tooMany = try await gw.post("/v1/jobs/batch", #"{"jobs":[{"kind":"demo.noop"},{"kind":"demo.noop"},{"kind":"demo.noop"},{"kind":"demo.noop"},{"kind":"demo.noop"},{"kind":"demo.noop"}]}"#)
            #expect(tooMany.status == 422)
            #expect(try await gw.post("/v1/jobs/batch", #"{"jobs":[]}"#).status == 422)
            #expect(try await gw.store.list(JobFilter(limit: 100)).jobs.count == 3)
        }
    }

    @Test("list filters and pages; cancel, retry and delete follow the state rules")
    func listCancelRetryDelete() async throws {
        try await TestGateway.with(workers: false, engine: { $0.queues["mail"] = QueueConfiguration() }) { gw in
            var ids: [String] = []
            for i in 0..<5 {
                let queue = i % 2 == 0 ? "mail" : "default"
                ids.append(try #require(try await gw.post("/v1/jobs", #"{"queue":"\#(queue)","kind":"demo.noop"}"#).string("id")))
            }
            let page1 = try await gw.get("/v1/jobs?limit=2")
            guard case .array(let first)? = page1["jobs"], case .string(let cursor)? = page1["next_cursor"] else { Issue.record("bad page"); return }
            #expect(first.count == 2)
            let page2 = try await gw.get("/v1/jobs?limit=10&cursor=\(cursor)")
            guard case .array(let rest)? = page2["jobs"] else { Issue.record("bad page"); return }
            #expect(rest.count == 3 && page2["next_cursor"] == .null || page2["next_cursor"] == nil)
            guard case .array(let mail)? = try await gw.get("/v1/jobs?queue=mail&state=pending").json.flatMap({ if case .object(let o) = $0 { o["jobs"] } else { nil } }) else { Issue.record("bad filter"); return }
            #expect(mail.count == 3)
            #expect(try await gw.get("/v1/jobs?state=done").status == 422)
            #expect(try await gw.get("/v1/jobs?limit=0").status == 422)
            #expect(try await gw.get("/v1/jobs?cursor=zzz").status == 422)

            #expect(try await gw.request(.DELETE, "/v1/jobs/\(ids[0])").status == 409)
            let cancelled = try await gw.request(.POST, "/v1/jobs/\(ids[0])/cancel")
            #expect(cancelled.status == 200 && cancelled.string("state") == "cancelled")
            let again = try await gw.request(.POST, "/v1/jobs/\(ids[0])/cancel")
            #expect(again.status == 409 && again.problemType == "urn:spool:problem:invalid-transition")
            let retried = try await gw.request(.POST, "/v1/jobs/\(ids[0])/retry")
            #expect(retried.status == 200 && retried.string("state") == "pending")
            #expect(try await gw.request(.POST, "/v1/jobs/\(ids[1])/retry").status == 409)
            _ = try await gw.request(.POST, "/v1/jobs/\(ids[1])/cancel")
            #expect(try await gw.request(.DELETE, "/v1/jobs/\(ids[1])").status == 204)
            #expect(try await gw.get("/v1/jobs/\(ids[1])").status == 404)
        }
    }

    @Test("queues: counts, pause, resume, redrive the dead letters, purge")
    func queues() async throws {
        try await TestGateway.with(workers: false) { gw in
            for _ in 0..<3 { _ = try await gw.post("/v1/jobs", #"{"kind":"demo.noop"}"#) }
            let list = try await gw.get("/v1/queues")
            #expect(list.status == 200)
            let one = try await gw.get("/v1/queues/default")
            #expect(one.status == 200 && one["depth"] == .number(3) && one["paused"] == .bool(false))
            // Every setting of the queue, and the kinds it takes.
            #expect(one["timeout_seconds"] == .number(30) && one["max_attempts"] != nil && one["concurrency"] != nil, "\(String(decoding: one.body, as: UTF8.self))")
            guard case .object(let backoff)? = one["backoff"], case .array(let kinds)? = one["kinds"] else {
                Issue.record("no backoff or kinds: \(String(decoding: one.body, as: UTF8.self))"); return
            }
            #expect(backoff["initial_seconds"] != nil && backoff["multiplier"] != nil && backoff["max_seconds"] != nil && backoff["jitter"] != nil)
            #expect(kinds.contains("demo.noop") && !kinds.contains("spool.webhook"))
            #expect(try await gw.get("/v1/queues/nope").status == 404)
            let paused = try await gw.request(.POST, "/v1/queues/default/pause")
            #expect(paused.status == 200 && paused["paused"] == .bool(true))
            #expect(try await gw.request(.POST, "/v1/queues/default/resume")["paused"] == .bool(false))
            // Make a dead letter, then redrive it.
            let leased = try await gw.store.leaseAll(queue: "default", limit: 1)
            try await gw.store.fail(leased[0].id, lease: leased[0].lease, error: AttemptError(attempt: 1, message: "x", at: Date()), retryAt: nil)
            let redriven = try await gw.request(.POST, "/v1/queues/default/retry-failed")
            #expect(redriven.status == 200 && redriven["retried"] == .number(1))
            let purged = try await gw.request(.POST, "/v1/queues/default/purge")
            #expect(purged.status == 200 && purged["purged"] == .number(3))
            #expect(try await gw.get("/v1/queues/default")["depth"] == .number(0))
        }
    }

    @Test("every error is a problem document with the right status")
    func errors() async throws {
        try await TestGateway.with(tokens: testTokens, workers: false, gateway: { $0.maxBodyBytes = 4096 }) { gw in
            func expectProblem(_ answer: HTTPAnswer, _ status: Int, _ type: String, sourceLocation: SourceLocation = #_sourceLocation) {
                #expect(answer.status == status, "\(String(decoding: answer.body, as: UTF8.self))", sourceLocation: sourceLocation)
                #expect(answer.problemType == "urn:spool:problem:\(type)", sourceLocation: sourceLocation)
                #expect(answer.string("title") != nil && answer.string("detail") != nil && answer["status"] == .number(Double(status)), sourceLocation: sourceLocation)
            }
            expectProblem(try await gw.post("/v1/jobs", #"{"kind":"demo.noop""#, token: tokenA), 400, "malformed-json")
            expectProblem(try await gw.post("/v1/jobs", #"{"kind":"demo.noop"}"#), 401, "unauthorized")
            expectProblem(try await gw.post("/v1/jobs", #"{"kind":"demo.noop"}"#, token: "wrong"), 401, "unauthorized")
            expectProblem(try await gw.post("/v1/jobs", #"{"kind":"demo.noop"}"#, token: tokenReader), 403, "forbidden")
            expectProblem(try await gw.request(.POST, "/v1/queues/default/pause", token: tokenA), 403, "forbidden")
            expectProblem(try await gw.get("/v1/jobs/\(JobID.make())", token: tokenA), 404, "not-found")
            expectProblem(try await gw.get("/v1/jobs/not-a-job-id", token: tokenA), 404, "not-found")
            expectProblem(try await gw.request(.POST, "/v1/jobs", body: Data(repeating: 0x20, count: 10_000), token: tokenA), 413, "too-large")
            expectProblem(try await gw.request(.POST, "/v1/jobs", json: "kind=demo.noop", token: tokenA, contentType: "application/x-www-form-urlencoded"), 415, "unsupported-media-type")
            expectProblem(try await gw.post("/v1/jobs", #"{"kind":"demo.noop","queue":"nope"}"#, token: tokenA), 422, "validation")
            expectProblem(try await gw.post("/v1/jobs", #"{"kind":"no.such.kind"}"#, token: tokenA), 422, "validation")
            expectProblem(try await gw.post("/v1/jobs", #"{"kind":"demo.noop","priority":99999}"#, token: tokenA), 422, "validation")
            expectProblem(try await gw.post("/v1/jobs", #"{"kind":"demo.noop","run_at":"tomorrow"}"#, token: tokenA), 422, "validation")
            expectProblem(try await gw.post("/v1/jobs", #"{"kind":"demo.noop","prioirty":1}"#, token: tokenA), 422, "validation")
            expectProblem(try await gw.post("/v1/jobs", #"{"kind":"demo.noop","run_at":"1700-01-01T00:00:00Z"}"#, token: tokenA), 422, "validation")
            let id = try #require(try await gw.post("/v1/jobs", #"{"kind":"demo.noop"}"#, token: tokenA).string("id"))
            expectProblem(try await gw.request(.POST, "/v1/jobs/\(id)/retry", token: tokenA), 409, "invalid-transition")
            #expect(try await gw.store.list(JobFilter(limit: 10)).jobs.count == 1)
        }
    }

    @Test("a full queue answers 429 with Retry-After and writes nothing")
    func queueFull() async throws {
        try await TestGateway.with(workers: false, engine: { $0.defaultQueue.depthLimit = 2 }) { gw in
            #expect(try await gw.post("/v1/jobs", #"{"kind":"demo.noop"}"#).status == 202)
            #expect(try await gw.post("/v1/jobs", #"{"kind":"demo.noop"}"#).status == 202)
            let full = try await gw.post("/v1/jobs", #"{"kind":"demo.noop"}"#)
            #expect(full.status == 429 && full.problemType == "urn:spool:problem:queue-full")
            #expect(Int(full.headers.first(name: "retry-after") ?? "") ?? 0 >= 1)
            let batch = try await gw.post("/v1/jobs/batch", #"{"jobs":[{"kind":"demo.noop"}]}"#)
            #expect(batch.status == 429)
            #expect(try await gw.store.list(JobFilter(limit: 10)).jobs.count == 2)
        }
    }

    @Test("a store that is gone answers 503 with Retry-After, and readiness fails")
    func storeUnavailable() async throws {
        try await TestGateway.with(workers: false) { gw in
            #expect(try await gw.get("/readyz").status == 200)
            try await gw.store.close()
            let answer = try await gw.post("/v1/jobs", #"{"kind":"demo.noop"}"#)
            #expect(answer.status == 503 && answer.problemType == "urn:spool:problem:unavailable")
            #expect(answer.headers.first(name: "retry-after") == "1")
            #expect(try await gw.get("/readyz").status == 503)
            #expect(try await gw.get("/v1/jobs").status == 503)
            #expect(try await gw.get("/healthz").status == 200)
        }
    }

    @Test("tenants see and touch only their own jobs, on every endpoint")
    func tenantIsolation() async throws {
        try await TestGateway.with(tokens: testTokens, workers: false) { gw in
            let a = try #require(try await gw.post("/v1/jobs", #"{"kind":"demo.noop","idempotency_key":"same"}"#, token: tokenA).string("id"))
            let b = try await gw.post("/v1/jobs", #"{"kind":"demo.noop","idempotency_key":"same"}"#, token: tokenB)
            #expect(b.status == 202 && b.string("id") != a)  // keys are per tenant
            #expect(try await gw.get("/v1/jobs/\(a)", token: tokenB).status == 404)
            #expect(try await gw.get("/v1/jobs/\(a)", token: tokenA).status == 200)
            #expect(try await gw.get("/v1/jobs/\(a)", token: tokenReader).status == 200)
            #expect(try await gw.request(.POST, "/v1/jobs/\(a)/cancel", token: tokenB).status == 404)
            #expect(try await gw.request(.POST, "/v1/jobs/\(a)/retry", token: tokenB).status == 404)
            #expect(try await gw.request(.DELETE, "/v1/jobs/\(a)", token: tokenB).status == 404)
            guard case .array(let seenByB)? = try await gw.get("/v1/jobs", token: tokenB)["jobs"] else { Issue.record("no list"); return }
            #expect(seenByB.count == 1)
            guard case .array(let seenByOps)? = try await gw.get("/v1/jobs", token: tokenOps)["jobs"] else { Issue.record("no list"); return }
            #expect(seenByOps.count == 2)
            let queueForB = try await gw.get("/v1/queues/default", token: tokenB)
            #expect(queueForB["depth"] == .number(1))
            #expect(try await gw.get("/v1/queues/default", token: tokenOps)["depth"] == .number(2))
            #expect(try await gw.get("/v1/jobs/\(a)", token: tokenOps).status == 200)
            #expect(try await gw.request(.POST, "/v1/jobs/\(a)/cancel", token: tokenA).status == 200)
        }
    }

    @Test("without tokens the gateway refuses to listen beyond loopback")
    func openModeNeedsLoopback() throws {
        var config = GatewayConfiguration()
        config.host = "0.0.0.0"
        #expect(throws: GatewayError.self) { try config.validate() }
        config.tokens = [APIToken(name: "t", tenant: "t", scopes: [.admin], secret: "s")]
        try config.validate()
        config.host = "127.0.0.1"
        config.tokens = []
        try config.validate()
    }

    @Test("the OpenAPI document lists exactly the routes the gateway serves")
    func openAPIMatchesRoutes() async throws {
        try await TestGateway.with(workers: false) { gw in
            let answer = try await gw.get("/v1/openapi.json")
            #expect(answer.status == 200)
            guard case .object(let doc)? = answer.json, case .object(let paths)? = doc["paths"] else { Issue.record("no paths"); return }
            #expect(doc["openapi"] == .string("3.1.0"))
            // An endpoint that does not exist is a problem document too.
            let missing = try await gw.get("/v1/nothing-here")
            #expect(missing.status == 404 && missing.problemType == "urn:spool:problem:no-route")
            var documented: [String] = []
            for (path, item) in paths {
                guard case .object(let operations) = item else { continue }
                for method in operations.keys where ["get", "post", "put", "patch", "delete"].contains(method) {
                    documented.append("\(method.uppercased()) \(path)")
                }
            }
            #expect(documented.sorted() == Gateway.routes.sorted())
            // And every documented route is really served (the router's own 404 is not a problem document).
            let id = JobID.make().description
            // (Endless streams: see SSETests and the dashboard's tests.)
            for route in Gateway.routes where route != "GET /v1/events" && route != "GET /v1/events/summary" {
                let parts = route.split(separator: " ")
                let path = String(parts[1]).replacingOccurrences(of: "{id}", with: id).replacingOccurrences(of: "{name}", with: "default")
                let answer = try await gw.request(.init(rawValue: String(parts[0])), path, json: parts[0] == "POST" ? "{}" : nil)
                #expect(answer.problemType != "urn:spool:problem:no-route", "\(route) is not served")
                #expect(answer.status != 405, "\(route) is not served")
            }
        }
    }

    @Test("health, readiness and Prometheus metrics")
    func opsEndpoints() async throws {
        try await TestGateway.with { gw in
            #expect(try await gw.get("/healthz").status == 200)
            #expect(try await gw.get("/readyz").status == 200)
            let id = try #require(try await gw.post("/v1/jobs", #"{"kind":"demo.noop"}"#).string("id"))
            let jobID = try #require(JobID(id))
            _ = try await gw.spool.waitUntilFinished(jobID)
            let metrics = try await gw.get("/metrics")
            let text = String(decoding: metrics.body, as: UTF8.self)
            #expect(metrics.status == 200)
            #expect(text.contains(#"spool_jobs_enqueued_total{queue="default",kind="demo.noop"}"#) || text.contains(#"spool_jobs_enqueued_total{kind="demo.noop",queue="default"}"#))
            #expect(text.contains("spool_jobs_finished_total"))
            #expect(text.contains("spool_queue_jobs"))
            #expect(text.contains("spool_job_run_seconds"))
            #expect(text.contains("http"))
        }
    }

    @Test("a sweep of malformed input gets only 4xx answers, writes nothing, and the server keeps serving")
    func malformedSweep() async throws {
        try await TestGateway.with(tokens: testTokens, workers: false) { gw in
            let bodies: [String] = [
                "", "{", "}", "[", "null", "true", "42", "\"text\"", "[]", "{}", #"{"kind":}"#, #"{"kind":"demo.noop""#,
                #"{"kind":42}"#, #"{"kind":["demo.noop"]}"#, #"{"kind":"demo.noop","payload":"#, #"{"kind":"demo.noop","priority":1e400}"#,
                #"{"kind":"demo.noop","priority":1.5}"#, #"{"kind":"demo.noop","priority":-1e308}"#, #"{"kind":"demo.noop","max_attempts":-1}"#,
                #"{"kind":"demo.noop","timeout_seconds":"soon"}"#, #"{"kind":"demo.noop","delay_seconds":-5}"#, #"{"kind":"demo.noop","delay_seconds":1e20}"#,
                #"{"kind":"démo.ñoop"}"#, #"{"kind":"demo.noop","queue":"🙂"}"#, #"{"kind":"\u0000"}"#, #"{"kind":"demo.noop","tags":[1,2]}"#,
                #"{"kind":"demo.noop","tags":"a"}"#, #"{"kind":"demo.noop","callback_url":"not a url"}"#, #"{"kind":"demo.noop","run_at":"2020-13-45T99:00:00Z"}"#,
                #"{"kind":"demo.noop","idempotency_key":""}"#, #"{"kind":"demo.noop","payload":{"a":"\ud800"}}"#, "\u{FEFF}{}",
                String(repeating: "[", count: 100_000), String(repeating: "{\"a\":", count: 50_000),
                #"{"kind":"demo.noop","kind":"demo.sleep","payload":"#,
            ]
            for body in bodies {
                let answer = try await gw.post("/v1/jobs", body, token: tokenA)
                #expect((400..<500).contains(answer.status), "body \(body.prefix(40)) got \(answer.status)")
                let batch = try await gw.post("/v1/jobs/batch", body, token: tokenA)
                #expect((400..<500).contains(batch.status), "batch \(body.prefix(40)) got \(batch.status)")
            }
            let huge = Data(repeating: UInt8(ascii: "a"), count: 10 << 20)
            #expect(try await gw.request(.POST, "/v1/jobs", body: huge, token: tokenA).status == 413)
            for path in ["/v1/jobs/%00", "/v1/jobs/../../etc/passwd", "/v1/jobs/" + String(repeating: "9", count: 2000), "/v1/jobs/🙂/cancel", "/v1/queues/" + String(repeating: "q", count: 500)] {
                let answer = try await gw.get(path, token: tokenA)
                #expect((400..<500).contains(answer.status), "\(path.prefix(40)) got \(answer.status)")
            }
            #expect(try await gw.store.list(JobFilter(limit: 10)).jobs.isEmpty)
            #expect(try await gw.get("/healthz").status == 200)
            #expect(try await gw.post("/v1/jobs", #"{"kind":"demo.noop"}"#, token: tokenA).status == 202)
        }
    }

    @Test("the CLI works against a running gateway with --url and SPOOL_TOKEN")
    func cliAgainstGateway() async throws {
        try await TestGateway.with(tokens: testTokens, workers: false) { gw in
            let url = "http://127.0.0.1:\(gw.port)"
            func run(_ args: [String], token: String) async throws -> (Int32, String) {
                let process = try SpoolProcess(args + ["--url", url, "--token", token], logTo: gw.dir.file("cli-\(UUID().uuidString).log"))
                return (await process.waitForExit(timeout: .seconds(30)) ?? -1, process.output)
            }
            let (s1, out1) = try await run(["enqueue", "--kind", "demo.noop", "--priority", "4"], token: tokenA)
            #expect(s1 == 0, "\(out1)")
            let doc = try JSONDecoder().decode(JobDocument.self, from: Data(out1.utf8))
            #expect(doc.tenant == "tenant-a" && doc.priority == 4 && doc.state == .pending)
            let (s2, out2) = try await run(["list"], token: tokenA)
            #expect(s2 == 0 && out2.contains(doc.id))
            let (s3, out3) = try await run(["list"], token: tokenB)
            #expect(s3 == 0 && !out3.contains(doc.id))
            let (s4, out4) = try await run(["get", doc.id], token: tokenB)
            #expect(s4 != 0 && out4.contains("404"))
            let (s5, out5) = try await run(["pause", "default"], token: tokenA)
            #expect(s5 != 0 && out5.contains("403"))
            let (s6, _) = try await run(["pause", "default"], token: tokenOps)
            #expect(s6 == 0)
            let (s7, out7) = try await run(["queues", "--json"], token: tokenOps)
            #expect(s7 == 0 && out7.contains("\"paused\" : true"))
            let (s8, out8) = try await run(["cancel", doc.id], token: tokenA)
            #expect(s8 == 0 && out8.contains("cancelled"))
        }
    }
}
