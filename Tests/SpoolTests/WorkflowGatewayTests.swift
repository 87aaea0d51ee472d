import Foundation
import SpoolCore
import SpoolGateway
import Testing

/// Workflows through the HTTP API, run by the engine's workers.
@Suite("Workflows over HTTP", .serialized, .timeLimit(.minutes(3)))
struct WorkflowGatewayTests {
    /// `wf.step`: answers its kind name and the results of its parents, as the handler saw them.
    static func registerStep(_ spool: Spool) {
        spool.register(AnyJobHandler(kind: "wf.step") { payload, context in
            let name = JSONValue(json: payload).flatMap { if case .object(let o) = $0 { o["name"] } else { nil } } ?? .null
            let parents = JSONValue.array(context.parents.map { $0.result.flatMap { JSONValue(json: $0) } ?? .null })
            return JSONValue.object(["name": name, "parents": parents, "at": .number(Date().timeIntervalSince1970)]).jsonData
        })
        spool.register(AnyJobHandler(kind: "wf.fail") { _, _ in throw JobFailure.nonRetryable("no") })
    }

    @Test("a DAG posted in one batch request with refs runs in order; each handler reads its parents' results")
    func dagOverHTTP() async throws {
        try await TestGateway.with(tokens: testTokens) { gw in
            Self.registerStep(gw.spool)
            let body = #"""
                {"jobs": [
                  {"kind": "wf.step", "ref": "convert", "payload": {"name": "convert"}},
                  {"kind": "wf.step", "ref": "clash", "depends_on": ["convert"], "payload": {"name": "clash"}},
                  {"kind": "wf.step", "depends_on": ["clash"], "payload": {"name": "report"}}
                ]}
                """#
            let answer = try await gw.post("/v1/jobs/batch", body, token: tokenA)
            #expect(answer.status == 202, "\(String(decoding: answer.body, as: UTF8.self))")
            guard case .array(let jobs)? = answer["jobs"], jobs.count == 3 else { Issue.record("no jobs"); return }
            let ids = jobs.compactMap { if case .object(let o) = $0, case .string(let id)? = o["id"] { JobID(id) } else { nil } }
            let states = jobs.compactMap { if case .object(let o) = $0, case .string(let s)? = o["state"] { s } else { nil } }
            #expect(states == ["pending", "waiting", "waiting"])
            let report = try await gw.spool.waitUntilFinished(ids[2], timeout: .seconds(30))
            #expect(report.state == .completed)
            // report saw clash's result, which saw convert's.
            let expected: JSONValue = .array([.object(["name": "clash", "parents": .array([.object(["name": "convert", "parents": .array([])])])])])
            guard case .object(let result)? = report.result.flatMap({ JSONValue(json: $0) }) else { Issue.record("no result"); return }
            #expect(stripTimes(result["parents"] ?? .null) == expected)
            let doc = try await gw.get("/v1/jobs/\(ids[2])", token: tokenA)
            #expect(doc["depends_on"] == .array([.string(ids[1].description)]) && doc.string("on_parent_failure") == "cancel")
            let started = try await ids.asyncMap { try #require(try await gw.store.job($0, tenant: nil)?.startedAt) }
            #expect(started == started.sorted())

            // Refs and parents that do not hold: 422, nothing written.
            let before = try await gw.store.list(JobFilter(limit: 100)).jobs.count
            let unknown = try await gw.post("/v1/jobs/batch", #"{"jobs": [{"kind": "wf.step", "depends_on": ["nope"]}]}"#, token: tokenA)
            #expect(unknown.status == 422 && unknown.problemType?.hasSuffix("validation") == true)
            let foreign = try await gw.post("/v1/jobs", #"{"kind": "wf.step", "depends_on": ["\#(ids[0])"]}"#, token: tokenB)
            #expect(foreign.status == 422, "\(String(decoding: foreign.body, as: UTF8.self))")
            #expect(try await gw.store.list(JobFilter(limit: 100)).jobs.count == before)
        }
    }

    @Test("a batch over HTTP: callback job with the figures, a signed batch.finished webhook, the batch document and its jobs")
    func batchOverHTTP() async throws {
        let receiver = WebhookReceiver(script: [])
        try await receiver.run { url in
            try await TestGateway.with(tokens: testTokens, webhooks: WebhookTests.loopbackAllowed()) { gw in
                Self.registerStep(gw.spool)
                let body = #"""
                    {"jobs": [{"kind": "wf.step", "payload": {"name": "a"}}, {"kind": "wf.fail"}, {"kind": "wf.step", "payload": {"name": "b"}}],
                     "callback": {"kind": "wf.step", "payload": {"name": "all done"}},
                     "on_failure": {"kind": "wf.step", "payload": {"name": "some failed"}},
                     "callback_url": "\#(url)"}
                    """#
                let created = try await gw.post("/v1/batches", body, token: tokenA)
                #expect(created.status == 202, "\(String(decoding: created.body, as: UTF8.self))")
                guard case .object(let batch)? = created["batch"], case .string(let id)? = batch["id"] else { Issue.record("no batch"); return }
                #expect(created.headers.first(name: "location") == "/v1/batches/\(id)")
                #expect(try await eventually(timeout: .seconds(30)) {
                    try await gw.get("/v1/batches/\(id)", token: tokenA).string("state") == "finished"
                })
                let doc = try await gw.get("/v1/batches/\(id)", token: tokenA)
                #expect(doc["counts"].flatMap { if case .object(let c) = $0 { c["completed"] } else { nil } } == .number(2))
                let callbackID = try #require(doc.string("callback_job_id").flatMap(JobID.init))
                let callback = try await gw.spool.waitUntilFinished(callbackID, timeout: .seconds(30))
                guard case .object(let payload)? = JSONValue(json: callback.payload), case .object(let figures)? = payload["batch"] else {
                    Issue.record("callback payload"); return
                }
                #expect(payload["payload"] == .object(["name": "some failed"]))
                #expect(figures["total"] == .integer(3) && figures["failed"] == .integer(1) && figures["completed"] == .integer(2))
                let page = try await gw.get("/v1/batches/\(id)/jobs", token: tokenA)
                guard case .array(let members)? = page["jobs"] else { Issue.record("no jobs"); return }
                #expect(members.count == 3)
                #expect(try await gw.get("/v1/batches/\(id)", token: tokenB).status == 404)  // another tenant's

                #expect(try await eventually(timeout: .seconds(20)) { receiver.requests.count == 1 })
                let hook = try #require(receiver.requests.first)
                let secret = try #require(try await gw.get("/v1/webhooks/secret", token: tokenA).string("secret"))
                #expect(IndependentVerifier.verify(secret: secret, id: hook.headers["webhook-id"] ?? "", timestamp: hook.headers["webhook-timestamp"] ?? "",
                                                   signatureHeader: hook.headers["webhook-signature"] ?? "", body: hook.body))
                guard case .object(let envelope)? = JSONValue(json: hook.body), case .object(let data)? = envelope["data"] else {
                    Issue.record("webhook body"); return
                }
                #expect(envelope["type"] == .string("batch.finished") && data["id"] == .string(id) && data["state"] == .string("finished"))
                try await Task.sleep(for: .milliseconds(300))
                #expect(receiver.requests.count == 1)
            }
        }
    }

    @Test("topics over HTTP: admins subscribe, a publish makes one job per subscriber, a key publishes once, tenants stay apart")
    func topicsOverHTTP() async throws {
        try await TestGateway.with(tokens: testTokens) { gw in
            Self.registerStep(gw.spool)
            for name in ["billing", "email", "audit"] {
                let put = try await gw.request(.PUT, "/v1/topics/order.created/subscriptions/\(name)?tenant=tenant-a",
                                               json: #"{"kind": "wf.step"}"#, token: tokenOps)
                #expect(put.status == 200, "\(String(decoding: put.body, as: UTF8.self))")
            }
            let forbidden = try await gw.request(.PUT, "/v1/topics/order.created/subscriptions/x", json: #"{"kind": "wf.step"}"#, token: tokenA)
            #expect(forbidden.status == 403)
            let event = #"{"payload": {"name": "order 7"}, "attributes": {"region": "eu"}}"#
            let published = try await gw.post("/v1/topics/order.created/events", event, token: tokenA, headers: [("Idempotency-Key", "order-7")])
            #expect(published.status == 202, "\(String(decoding: published.body, as: UTF8.self))")
            guard case .array(let jobIDs)? = published["job_ids"] else { Issue.record("no job ids"); return }
            #expect(jobIDs.count == 3)
            let again = try await gw.post("/v1/topics/order.created/events", event, token: tokenA, headers: [("Idempotency-Key", "order-7")])
            #expect(again.status == 200 && again["replayed"] == .bool(true) && again["job_ids"] == .array(jobIDs))
            // tenant-b has no subscribers: its event is recorded with no job.
            let theirs = try await gw.post("/v1/topics/order.created/events", event, token: tokenB)
            #expect(theirs.status == 202 && theirs["job_ids"] == .array([]))
            for case .string(let id) in jobIDs {
                #expect(try await gw.spool.waitUntilFinished(try #require(JobID(id)), timeout: .seconds(30)).state == .completed)
            }
            let topics = try await gw.get("/v1/topics", token: tokenA)
            guard case .array(let list)? = topics["topics"], case .object(let topic)? = list.first else { Issue.record("no topics"); return }
            #expect(topic["events"] == .number(1) && topic["topic"] == .string("order.created"))
            guard case .array(let subscribers)? = topic["subscribers"] else { Issue.record("no subscribers"); return }
            #expect(subscribers.count == 3)
            let topicsB = try await gw.get("/v1/topics", token: tokenB)
            guard case .array(let listB)? = topicsB["topics"], case .object(let topicB)? = listB.first else { Issue.record("no topics for b"); return }
            #expect(topicB["subscribers"] == .array([]) && topicB["events"] == .number(1))
            let events = try await gw.get("/v1/topics/order.created/events", token: tokenA)
            guard case .array(let kept)? = events["events"] else { Issue.record("no events"); return }
            #expect(kept.count == 1)
        }
    }

    private func stripTimes(_ value: JSONValue) -> JSONValue {
        switch value {
        case .object(let o): .object(o.filter { $0.key != "at" }.mapValues(stripTimes))
        case .array(let a): .array(a.map(stripTimes))
        default: value
        }
    }
}
