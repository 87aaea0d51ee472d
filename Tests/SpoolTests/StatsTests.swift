import Foundation
import SpoolCore
import SpoolGateway
import Testing

@Suite("Queue statistics", .serialized, .timeLimit(.minutes(2)))
struct StatsTests {
    @Test("histograms: buckets, merge, percentiles as bucket upper bounds")
    func histogram() {
        var a = LatencyHistogram(), b = LatencyHistogram()
        for ms in [0.5, 3, 3, 40] { a.add(milliseconds: ms) }
        b.add(milliseconds: 1e9)
        #expect(a.percentile(0.5) == 5 && a.percentile(1) == 50 && a.total == 4)
        a.merge(b)
        #expect(a.total == 5 && a.percentile(1)! > LatencyHistogram.bounds.last!)
        #expect(LatencyHistogram().percentile(0.5) == nil)
        #expect(LatencyHistogram(counts: [1, 2]) == nil)
    }

    @Test("jobs run by workers and by a remote worker through the gateway are counted, written once a flush interval, and served by GET /v1/stats per tenant")
    func engineAndAPI() async throws {
        let tokens = [APIToken(name: "admin", tenant: "ops", scopes: [.admin], secret: "a"),
                      APIToken(name: "acme", tenant: "acme", scopes: [.enqueue, .read, .worker], secret: "c")]
        try await TestGateway.with(tokens: tokens, engine: { $0.statsFlushInterval = .milliseconds(200); $0.admission.queues = ["remote"] }) { gw in
            // A remote worker's job (the queue no worker in the process serves), leased and
            // completed over the worker protocol.
            let lease = #"{"worker_id":"r1","queues":["remote"],"kinds":["r.k"],"max_jobs":1,"wait_seconds":0}"#
            _ = try await gw.post("/v1/worker/lease", lease, token: "c")
            #expect(try await gw.post("/v1/jobs", #"{"queue":"remote","kind":"r.k","payload":{}}"#, token: "c").status == 202)
            let leased = try await gw.post("/v1/worker/lease", lease, token: "c")
            guard case .array(let jobs)? = leased["jobs"], case .object(let job)? = jobs.first,
                  case .string(let remoteID)? = job["id"], case .string(let token)? = job["lease_token"] else {
                Issue.record("no remote lease: \(String(decoding: leased.body, as: UTF8.self))"); return
            }
            #expect(try await gw.post("/v1/worker/jobs/\(remoteID)/complete", #"{"lease_token":"\#(token)"}"#, token: "c").status == 204)

            var ids: [String] = []
            for _ in 0..<4 {
                let answer = try await gw.post("/v1/jobs", #"{"kind":"demo.sleep","payload":{"seconds":0}}"#, token: "c")
                ids.append(try #require(answer.string("id")))
            }
            let failed = try await gw.post("/v1/jobs", #"{"kind":"demo.flaky","payload":{"always":true},"max_attempts":1}"#, token: "a")
            #expect(failed.status == 202)
            for id in ids { _ = try await gw.spool.waitUntilFinished(JobID(id)!, timeout: .seconds(20)) }
            _ = try await gw.spool.waitUntilFinished(JobID(try #require(failed.string("id")))!, timeout: .seconds(20))

            // Written by the flusher (not only held in memory).
            let now = QueueMinute.minute(of: Date())
            #expect(await eventually(timeout: .seconds(10)) {
                let rows = (try? await gw.store.queueMinutes(from: now - 2, to: now + 2, tenant: nil, queue: nil)) ?? []
                return rows.map(\.completed).reduce(0, +) == 5 && rows.map(\.failed).reduce(0, +) == 1
            })
            func totals(_ token: String) async throws -> (completed: Int, failed: Int, runSamples: Bool) {
                let answer = try await gw.get("/v1/stats?window=hour", token: token)
                #expect(answer.status == 200)
                guard case .array(let buckets)? = answer["buckets"] else { Issue.record("no buckets"); return (0, 0, false) }
                #expect(buckets.count == 60)
                var completed = 0, failed = 0, samples = false
                for case .object(let bucket) in buckets {
                    if case .integer(let n)? = bucket["completed"] { completed += Int(n) }
                    if case .integer(let n)? = bucket["failed"] { failed += Int(n) }
                    if case .object(let run)? = bucket["run_ms"], run["p50"] != nil { samples = true }
                }
                return (completed, failed, samples)
            }
            let all = try await totals("a")
            #expect(all.completed == 5 && all.failed == 1 && all.runSamples)
            // A tenant sees its own queues' figures only (the failed job was ops's).
            let acme = try await totals("c")
            #expect(acme.completed == 5 && acme.failed == 0)
            #expect(try await gw.get("/v1/stats?window=week", token: "a").status == 422)
            #expect(try await gw.get("/v1/stats?window=day", token: "a")["bucket_seconds"] == .integer(900))
        }
    }
}
