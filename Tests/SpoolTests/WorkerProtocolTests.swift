import Foundation
import SpoolCore
import SpoolGateway
import Testing

private let workerA = "worker-secret-a"
private let workerB = "worker-secret-b"
private let enqueueOnly = "enqueue-secret-a"
private let protocolTokens = [
    APIToken(name: "wa", tenant: "tenant-a", scopes: [.enqueue, .read, .worker], secret: workerA),
    APIToken(name: "wb", tenant: "tenant-b", scopes: [.enqueue, .read, .worker], secret: workerB),
    APIToken(name: "ea", tenant: "tenant-a", scopes: [.enqueue, .read], secret: enqueueOnly),
]

/// A job as a remote worker got it.
private struct Leased {
    var id: String
    var token: String
    var kind: String
    var payload: JSONValue?
}

extension TestGateway {
    /// `POST /v1/worker/lease`; fails the test on anything but 200.
    fileprivate func lease(_ kinds: [String], worker: String = "remote-1", max: Int = 10, wait: Double = 0,
                           queues: [String] = ["default"], token: String? = nil) async throws -> [Leased] {
        let body = JSONValue.object([
            "worker_id": .string(worker), "queues": .array(queues.map { .string($0) }),
            "kinds": .array(kinds.map { .string($0) }), "max_jobs": .number(Double(max)), "wait_seconds": .number(wait),
        ])
        let answer = try await post("/v1/worker/lease", String(decoding: body.jsonData, as: UTF8.self), token: token)
        try #require(answer.status == 200, "lease answered \(answer.status): \(String(decoding: answer.body, as: UTF8.self))")
        guard case .array(let jobs)? = answer["jobs"] else { throw GatewayError("no jobs array") }
        return jobs.compactMap { job in
            guard case .object(let o) = job, case .string(let id)? = o["id"], case .string(let token)? = o["lease_token"],
                  case .string(let kind)? = o["kind"] else { return nil }
            return Leased(id: id, token: token, kind: kind, payload: o["payload"])
        }
    }

    fileprivate func enqueue(_ kind: String, payload: String = "{}", token: String? = nil) async throws -> String {
        let answer = try await post("/v1/jobs", #"{"kind":"\#(kind)","payload":\#(payload)}"#, token: token)
        try #require(answer.status == 202, "enqueue answered \(answer.status): \(String(decoding: answer.body, as: UTF8.self))")
        return try #require(answer.string("id"))
    }
}

@Suite("Worker protocol over HTTP", .timeLimit(.minutes(3)))
struct WorkerProtocolTests {
    @Test("a remote worker runs its kinds and the in-process worker its own, on one queue; each job once")
    func sharedQueue() async throws {
        try await TestGateway.with { gw in
            // Until a remote worker names it, a kind nobody runs here is refused.
            #expect(try await gw.post("/v1/jobs", #"{"kind":"remote.echo"}"#).status == 422)
            #expect(try await gw.lease(["remote.echo"]).isEmpty)
            var remoteIDs: Set<String> = [], localIDs: Set<String> = []
            for n in 0..<30 {
                remoteIDs.insert(try await gw.enqueue("remote.echo", payload: #"{"n":\#(n)}"#))
                localIDs.insert(try await gw.enqueue("demo.noop"))
            }
            var done: [String: Int] = [:]
            for _ in 0..<200 where done.count < remoteIDs.count {
                let jobs = try await gw.lease(["remote.echo"], max: 7, wait: 1)
                #expect(jobs.allSatisfy { $0.kind == "remote.echo" && remoteIDs.contains($0.id) })
                if jobs.isEmpty { continue }
                let items = jobs.map { job in
                    JSONValue.object(["job_id": .string(job.id), "lease_token": .string(job.token), "result": .object(["echo": job.payload ?? .null])])
                }
                let answer = try await gw.post("/v1/worker/complete", String(decoding: JSONValue.object(["jobs": .array(items)]).jsonData, as: UTF8.self))
                #expect(answer.status == 200)
                guard case .array(let results)? = answer["results"] else { Issue.record("no results"); return }
                for case .object(let r) in results {
                    #expect(r["status"] == .string("completed"))
                    if case .string(let id)? = r["job_id"] { done[id, default: 0] += 1 }
                }
            }
            #expect(Set(done.keys) == remoteIDs && done.values.allSatisfy { $0 == 1 })
            for id in remoteIDs {
                let job = try #require(try await gw.store.job(JobID(id)!, tenant: nil))
                #expect(job.state == .completed && job.attempt == 1)
                #expect(job.result.map { String(decoding: $0, as: UTF8.self).hasPrefix(#"{"echo":{"n":"#) } == true)
            }
            for id in localIDs {
                let job = try await gw.spool.waitUntilFinished(JobID(id)!)
                #expect(job.state == .completed && job.workerID != "remote-1")
            }
            // Enqueues of the kind are accepted now that a worker runs it.
            #expect(try await gw.post("/v1/jobs", #"{"kind":"remote.echo"}"#).status == 202)
        }
    }

    @Test("an idle long poll is woken by an enqueue, not by its poll interval")
    func longPollWakes() async throws {
        try await TestGateway.with(engine: { $0.pollInterval = .seconds(30) }) { gw in
            _ = try await gw.lease(["remote.wake"])  // names the kind
            let started = ContinuousClock.now
            let poll = Task { try await gw.lease(["remote.wake"], wait: 20) }
            try await Task.sleep(for: .milliseconds(300))  // let the poll start waiting
            let enqueued = ContinuousClock.now
            let id = try await gw.enqueue("remote.wake")
            let jobs = try await poll.value
            #expect(jobs.map(\.id) == [id])
            #expect(ContinuousClock.now - enqueued < .seconds(8), "the poll was not woken by the enqueue (its poll interval is 30 s)")
            #expect(ContinuousClock.now - started < .seconds(10))
        }
    }

    @Test("every call with a lease token is fenced: cancelled or handed-on jobs answer 409 and change nothing")
    func fencing() async throws {
        try await TestGateway.with(engine: { $0.leaseDuration = .seconds(3); $0.heartbeatInterval = .milliseconds(500) }) { gw in
            _ = try await gw.lease(["remote.fence"])
            // Cancelled while running.
            let cancelled = try await gw.enqueue("remote.fence")
            let first = try #require(try await gw.lease(["remote.fence"]).first)
            #expect(try await gw.post("/v1/jobs/\(cancelled)/cancel", "{}").status == 200)
            let beat = try await gw.post("/v1/worker/heartbeat", #"{"leases":[{"job_id":"\#(first.id)","lease_token":"\#(first.token)"}]}"#)
            #expect(beat["lost"] == .array([.string(first.id)]))
            let late = try await gw.post("/v1/worker/jobs/\(first.id)/complete", #"{"lease_token":"\#(first.token)","result":1}"#)
            #expect(late.status == 409 && late.problemType == "urn:spool:problem:lease-lost")
            #expect(try await gw.store.job(JobID(cancelled)!, tenant: nil)?.state == .cancelled)

            // Expired and handed on: the first worker's late reports change nothing.
            let id = try await gw.enqueue("remote.fence")
            let stale = try #require(try await gw.lease(["remote.fence"], worker: "slow").first)
            #expect(await eventually(timeout: .seconds(15)) {
                (try? await gw.store.job(JobID(id)!, tenant: nil))?.state == .pending
            }, "the expired lease was not rescued")
            let fresh = try #require(try await gw.lease(["remote.fence"], worker: "fast").first)
            #expect(fresh.id == id && fresh.token != stale.token)
            for path in ["complete", "fail", "progress", "release"] {
                let body = #"{"lease_token":"\#(stale.token)","result":"stale","error":"stale","percent":50}"#
                let answer = try await gw.post("/v1/worker/jobs/\(id)/\(path)", body)
                #expect(answer.status == 409, "\(path) with a stale token answered \(answer.status)")
            }
            #expect(try await gw.post("/v1/worker/jobs/\(id)/complete", #"{"lease_token":"\#(fresh.token)","result":"fresh"}"#).status == 204)
            let job = try #require(try await gw.store.job(JobID(id)!, tenant: nil))
            #expect(job.state == .completed && job.result == Data(#""fresh""#.utf8) && job.attempt == 2)
        }
    }

    @Test("a worker token leases only its tenant's jobs, and cannot report on another tenant's")
    func tenants() async throws {
        try await TestGateway.with(tokens: protocolTokens) { gw in
            _ = try await gw.lease(["remote.t"], token: workerA)
            let ofB = try await gw.enqueue("remote.t", token: workerB)
            #expect(try await gw.lease(["remote.t"], max: 100, token: workerA).isEmpty)
            let leased = try #require(try await gw.lease(["remote.t"], worker: "remote-b", token: workerB).first)
            #expect(leased.id == ofB)
            let foreign = try await gw.post("/v1/worker/jobs/\(ofB)/fail", #"{"lease_token":"\#(leased.token)","error":"x"}"#, token: workerA)
            #expect(foreign.status == 409)
            #expect(try await gw.store.job(JobID(ofB)!, tenant: nil)?.state == .processing)
            // Each tenant sees its own remote workers only.
            func ids(_ token: String) async throws -> [JSONValue] {
                guard case .array(let list)? = try await gw.get("/v1/workers", token: token)["workers"] else { return [] }
                return list.compactMap { if case .object(let w) = $0 { w["id"] } else { nil } }
            }
            #expect(try await ids(workerA) == [.string("remote-1")])
            #expect(try await ids(workerB) == [.string("remote-b")])
            // A worker leaving takes its own entry out, never another tenant's.
            let leaving = #"{"worker_id":"remote-1","leases":[],"stopped":true}"#
            #expect(try await gw.post("/v1/worker/heartbeat", leaving, token: workerB).status == 200)
            #expect(try await ids(workerA) == [.string("remote-1")])
            #expect(try await gw.post("/v1/worker/heartbeat", leaving, token: workerA).status == 200)
            #expect(try await ids(workerA).isEmpty)
            // The worker scope is required.
            let noScope = try await gw.post("/v1/worker/lease", #"{"worker_id":"w","queues":["default"],"kinds":["remote.t"]}"#, token: enqueueOnly)
            #expect(noScope.status == 403)
        }
    }

    @Test("fail retries with the worker's delay or the queue's backoff, or fails for good; release does not count the attempt")
    func outcomes() async throws {
        try await TestGateway.with(engine: { $0.defaultQueue.maxAttempts = 3 }) { gw in
            _ = try await gw.lease(["remote.o"])
            let id = try await gw.enqueue("remote.o")
            var job = try #require(try await gw.lease(["remote.o"]).first)
            #expect(try await gw.post("/v1/worker/jobs/\(id)/release", #"{"lease_token":"\#(job.token)"}"#).status == 204)
            job = try #require(try await gw.lease(["remote.o"]).first)
            #expect(try await gw.store.job(JobID(id)!, tenant: nil)?.attempt == 1, "the released attempt was counted")
            let retried = try await gw.post("/v1/worker/jobs/\(id)/fail", #"{"lease_token":"\#(job.token)","error":"flaky","retry_after_seconds":0}"#)
            #expect(retried.status == 200 && retried.string("status") == "retried" && retried.string("retry_at") != nil)
            job = try #require(try await gw.lease(["remote.o"], wait: 5).first)
            let failed = try await gw.post("/v1/worker/jobs/\(id)/fail", #"{"lease_token":"\#(job.token)","error":"bad input","retryable":false}"#)
            #expect(failed.status == 200 && failed.string("status") == "failed")
            let stored = try #require(try await gw.store.job(JobID(id)!, tenant: nil))
            #expect(stored.state == .failed && stored.errors.map(\.reason) == ["error", "non_retryable"])
            #expect(stored.errors.map(\.message) == ["flaky", "bad input"])
            #expect(stored.errors.map(\.worker) == ["remote-1", "remote-1"], "each attempt records its worker")
        }
    }

    @Test("the registry lists in-process and remote workers; a remote worker that goes silent shows as lost")
    func registry() async throws {
        try await TestGateway.with(engine: { $0.leaseDuration = .seconds(3); $0.heartbeatInterval = .milliseconds(500) }) { gw in
            let lease = #"{"worker_id":"py-7","queues":["default"],"kinds":["remote.r"],"name":"billing","host":"gpu-1","pid":42,"version":"spool-python/0.1","concurrency":3}"#
            #expect(try await gw.post("/v1/worker/lease", lease).status == 200)
            func workers() async throws -> [String: [String: JSONValue]] {
                let answer = try await gw.get("/v1/workers")
                guard case .array(let list)? = answer["workers"] else { return [:] }
                var byID: [String: [String: JSONValue]] = [:]
                for case .object(let w) in list { if case .string(let id)? = w["id"] { byID[id] = w } }
                return byID
            }
            var all = try await workers()
            let remote = try #require(all["py-7"])
            #expect(remote["name"] == .string("billing") && remote["host"] == .string("gpu-1") && remote["pid"] == .number(42))
            #expect(remote["kinds"] == .array([.string("remote.r")]) && remote["concurrency"] == .number(3) && remote["state"] == .string("active"))
            let local = try #require(all.values.first { $0["id"] == .string(gw.spool.configuration.workerID) }, "the in-process worker is not listed")
            #expect(local["state"] == .string("active"))

            // A heartbeat naming the worker reports what it runs.
            let id = try await gw.enqueue("remote.r")
            let job = try #require(try await gw.lease(["remote.r"], worker: "py-7").first)
            try await Task.sleep(for: .milliseconds(1100))  // past the registry's one-write-per-second
            let beat = #"{"worker_id":"py-7","leases":[{"job_id":"\#(id)","lease_token":"\#(job.token)"}]}"#
            #expect(try await gw.post("/v1/worker/heartbeat", beat).status == 200)
            #expect(try await workers()["py-7"]?["running"] == .number(1))

            // Silent for longer than a lease: lost; the in-process worker, refreshed, stays active.
            #expect(await eventually(timeout: .seconds(20)) { (try? await workers()["py-7"]?["state"]) == .string("lost") })
            all = try await workers()
            #expect(all[gw.spool.configuration.workerID]?["state"] == .string("active"))
            let metrics = String(decoding: try await gw.get("/metrics").body, as: UTF8.self)
            #expect(metrics.contains(#"spool_workers{state="lost"} 1"#) && metrics.contains(#"spool_workers{state="active"} 1"#))
        }
    }

    @Test("bad worker requests get problem documents")
    func validation() async throws {
        try await TestGateway.with { gw in
            for body in [
                #"{"worker_id":"w","queues":["default"],"kinds":["k"],"max_jobs":0}"#,
                #"{"worker_id":"w","queues":["default"],"kinds":["k"],"wait_seconds":61}"#,
                #"{"worker_id":"w","queues":["default"],"kinds":[]}"#,
                #"{"worker_id":"w","queues":["bad queue"],"kinds":["k"]}"#,
                #"{"worker_id":"w\u0007","queues":["default"],"kinds":["k"]}"#,
                #"{"worker_id":"w","queues":["default"]}"#,
                #"{"worker_id":5,"queues":["default"],"kinds":["k"]}"#,
            ] {
                let answer = try await gw.post("/v1/worker/lease", body)
                #expect(answer.status == 422 && answer.problemType == "urn:spool:problem:validation", "\(body): \(answer.status)")
            }
            let missing = try await gw.post("/v1/worker/lease", #"{"queues":["default"],"kinds":["k"]}"#)
            #expect(missing.string("detail")?.contains("worker_id") == true)
            let notJob = try await gw.post("/v1/worker/jobs/nope/complete", #"{"lease_token":"t"}"#)
            #expect(notJob.status == 404)
            let mixed = try await gw.post("/v1/worker/complete", #"{"jobs":[{"job_id":"nope","lease_token":"t"},{"job_id":"0190b1c2-0000-7000-8000-000000000000","lease_token":"t"}]}"#)
            #expect(mixed.status == 200)
            guard case .array(let results)? = mixed["results"] else { Issue.record("no results"); return }
            #expect(results.count == 2)
            if results.count == 2, case .object(let a) = results[0], case .object(let b) = results[1] {
                #expect(a["status"] == .string("validation") && b["status"] == .string("lease-lost"))
            }
        }
    }
}
