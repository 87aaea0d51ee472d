import Foundation
import SpoolCore
import SpoolPostgres
import SpoolSQLite
import Testing

/// Job dependencies, batches and topics: the part of the store contract that workflows add.
/// Each test runs once per store kind.
@Suite("Workflow contract")
struct WorkflowContractTests {
    private func job(_ kind: String, queue: String = "q", dependsOn: [ParentReference] = [], policy: ParentFailurePolicy = .cancel,
                     tenant: String = NewJob.defaultTenant) -> NewJob {
        var job = NewJob(queue: queue, kind: kind, maxAttempts: 1, tenant: tenant)
        job.dependsOn = dependsOn
        job.onParentFailure = policy
        return job
    }

    /// Leases every ready job of `queue` and returns them.
    private func ready(_ store: any JobStore, queue: String = "q") async throws -> [LeasedJob] {
        try await store.leaseAll(queue: queue, limit: 1000)
    }

    @Test("a three-level DAG made in one call runs in dependency order, each child seeing its parents' results", arguments: StoreKind.allCases)
    func dagRunsInOrder(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let results = try await store.enqueue([
                job("convert"),
                job("clash", dependsOn: [.request(0)]),
                job("check", dependsOn: [.request(0)]),
                job("report", dependsOn: [.request(1), .request(2)]),
            ], defaults: testDefaults, depthLimits: [:])
            let ids = results.map(\.job.id)
            #expect(results.map(\.job.state) == [.pending, .waiting, .waiting, .waiting])
            #expect(try await store.mustGet(ids[3]).dependsOn == [ids[1], ids[2]])
            #expect(try await store.mustGet(ids[3]).parentsLeft == 2)

            var order: [String] = []
            for round in 0..<3 {
                let leased = try await ready(store)
                #expect(!leased.isEmpty, "round \(round): nothing ready")
                for job in leased.sorted(by: { $0.job.kind < $1.job.kind }) {
                    order.append(job.job.kind)
                    let parentKinds = job.parents.map(\.kind).sorted()
                    switch job.job.kind {
                    case "convert": #expect(parentKinds.isEmpty)
                    case "clash", "check":
                        #expect(parentKinds == ["convert"])
                        #expect(job.parents.first?.result.flatMap { JSONValue(json: $0) } == .object(["file": "model.ifc"]))
                    default:
                        #expect(parentKinds == ["check", "clash"])
                        #expect(job.parents.allSatisfy { $0.state == .completed && $0.result != nil })
                    }
                    try await store.complete(job.id, lease: job.lease, result: Data(#"{"file":"model.ifc"}"#.utf8))
                }
            }
            #expect(order == ["convert", "check", "clash", "report"])
            #expect(try await ready(store).isEmpty)
            let stats = try #require(try await store.queueStats(tenant: nil).first { $0.name == "q" })
            #expect(stats.counts[.completed] == 4 && (stats.counts[.waiting] ?? 0) == 0)
        }
    }

    @Test("a parent that fails for good cancels its descendants; retrying it re-arms them, and they run", arguments: StoreKind.allCases)
    func failedParentCancelsAndRetryRearms(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let ids = try await store.enqueue([
                job("a"), job("b", dependsOn: [.request(0)]), job("c", dependsOn: [.request(1)]),
            ], defaults: testDefaults, depthLimits: [:]).map(\.job.id)
            let a = try #require(try await ready(store).first)
            try await store.fail(a.id, lease: a.lease, error: AttemptError(attempt: 1, message: "boom", at: Date()), retryAt: nil)
            for id in ids.dropFirst() {
                let child = try await store.mustGet(id)
                #expect(child.state == .cancelled)
                #expect(child.finishedAt != nil)
            }
            #expect(try await store.mustGet(ids[1]).cancelReason == "parent job \(ids[0]) failed")
            #expect(try await store.mustGet(ids[2]).cancelReason == "parent job \(ids[1]) was cancelled")

            _ = try await store.retry(ids[0], tenant: nil)
            #expect(try await store.mustGet(ids[1]).state == .waiting)
            #expect(try await store.mustGet(ids[2]).state == .waiting)
            #expect(try await store.mustGet(ids[2]).cancelReason == nil)
            for _ in 0..<3 {
                let leased = try #require(try await ready(store).first)
                try await store.complete(leased.id, lease: leased.lease, result: nil)
            }
            for id in ids { #expect(try await store.mustGet(id).state == .completed) }
        }
    }

    @Test("a job that runs anyway runs after its parent fails; a child of a cancelled parent is cancelled", arguments: StoreKind.allCases)
    func runAnyway(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let ids = try await store.enqueue([
                job("a"), job("cleanup", dependsOn: [.request(0)], policy: .run), job("next", dependsOn: [.request(0)]),
            ], defaults: testDefaults, depthLimits: [:]).map(\.job.id)
            let a = try #require(try await ready(store).first)
            try await store.fail(a.id, lease: a.lease, error: AttemptError(attempt: 1, message: "boom", at: Date()), retryAt: nil)
            let leased = try await ready(store)
            #expect(leased.map(\.job.kind) == ["cleanup"])
            #expect(leased.first?.parents.map(\.state) == [.failed])
            #expect(try await store.mustGet(ids[2]).state == .cancelled)

            // A parent cancelled by hand: the same for its waiting children.
            let more = try await store.enqueue([job("x", queue: "other"), job("y", queue: "other", dependsOn: [.request(0)])],
                                               defaults: testDefaults, depthLimits: [:]).map(\.job.id)
            _ = try await store.cancel(more[0], tenant: nil)
            #expect(try await store.mustGet(more[1]).state == .cancelled)
        }
    }

    @Test("edge cases: a parent made cancelled counts once, retrying a failed parent counts again for run-anyway children, a replayed parent is followed, a retried child waits for its parents", arguments: StoreKind.allCases)
    func dependencyEdgeCases(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let failed = try await store.add(kind: "f", maxAttempts: 1).job.id
            let f = try #require(try await ready(store).first)
            try await store.fail(f.id, lease: f.lease, error: AttemptError(attempt: 1, message: "x", at: Date()), retryAt: nil)
            let running = try await store.add(kind: "x").job.id
            // P0 is made cancelled (its parent failed); C runs anyway but still waits for X.
            let made = try await store.enqueue([job("p0", dependsOn: [.job(failed)]), job("c", dependsOn: [.request(0), .job(running)], policy: .run)],
                                               defaults: testDefaults, depthLimits: [:])
            #expect(made.map(\.job.state) == [.cancelled, .waiting])
            #expect(try await store.mustGet(made[1].job.id).parentsLeft == 1)
            #expect(try await store.mustGet(made[1].job.id).state == .waiting)

            // A run-anyway child of a failed parent: retrying the parent makes it wait for it again.
            let ids = try await store.enqueue([job("a", queue: "r"), job("b", queue: "r"), job("c", queue: "r", dependsOn: [.request(0), .request(1)], policy: .run)],
                                              defaults: testDefaults, depthLimits: [:]).map(\.job.id)
            let leased = try await store.leaseAll(queue: "r")
            let a = try #require(leased.first { $0.id == ids[0] }), b = try #require(leased.first { $0.id == ids[1] })
            try await store.fail(a.id, lease: a.lease, error: AttemptError(attempt: 1, message: "x", at: Date()), retryAt: nil)
            #expect(try await store.mustGet(ids[2]).parentsLeft == 1)
            _ = try await store.retry(ids[0], tenant: nil)
            #expect(try await store.mustGet(ids[2]).parentsLeft == 2)
            try await store.complete(b.id, lease: b.lease, result: nil)
            #expect(try await store.mustGet(ids[2]).state == .waiting)
            let again = try #require(try await store.leaseAll(queue: "r").first)
            #expect(again.id == ids[0])
            try await store.complete(again.id, lease: again.lease, result: nil)
            #expect(try await store.mustGet(ids[2]).state == .pending)

            // A parent that an idempotency key resolves to an existing job is followed too.
            var keyed = NewJob(queue: "k", kind: "p", maxAttempts: 1)
            keyed.idempotencyKey = "parent-1"
            let parent = try await store.enqueue([keyed], defaults: testDefaults, depthLimits: [:])[0].job.id
            let pair = try await store.enqueue([keyed, job("child", queue: "k2", dependsOn: [.request(0)])], defaults: testDefaults, depthLimits: [:])
            #expect(pair[0].replayed && pair[0].job.id == parent && pair[1].job.state == .waiting)
            let p = try #require(try await store.leaseAll(queue: "k").first)
            try await store.complete(p.id, lease: p.lease, result: nil)
            #expect(try await store.mustGet(pair[1].job.id).state == .pending)

            // A waiting child cancelled by hand and retried waits for its parents again.
            let family = try await store.enqueue([job("p", queue: "w"), job("c", queue: "w2", dependsOn: [.request(0)])],
                                                 defaults: testDefaults, depthLimits: [:]).map(\.job.id)
            _ = try await store.cancel(family[1], tenant: nil)
            let retried = try await store.retry(family[1], tenant: nil)
            #expect(retried.state == .waiting && retried.parentsLeft == 1)
            #expect(try await store.leaseAll(queue: "w2").isEmpty)
        }
    }

    @Test("a diamond re-armed by one retry waits for both branches; a queue redrive re-arms children and lets a child wait for its parent", arguments: StoreKind.allCases)
    func diamondAndRedrive(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            // x -> c1, c2 -> g: x fails, everything below is cancelled; retrying x re-arms all.
            let ids = try await store.enqueue([
                job("x", queue: "d"), job("c1", queue: "d", dependsOn: [.request(0)]), job("c2", queue: "d", dependsOn: [.request(0)]),
                job("g", queue: "d", dependsOn: [.request(1), .request(2)]),
            ], defaults: testDefaults, depthLimits: [:]).map(\.job.id)
            let x = try #require(try await store.leaseAll(queue: "d").first)
            try await store.fail(x.id, lease: x.lease, error: AttemptError(attempt: 1, message: "x", at: Date()), retryAt: nil)
            #expect(try await store.mustGet(ids[3]).state == .cancelled)
            _ = try await store.retry(ids[0], tenant: nil)
            let g = try await store.mustGet(ids[3])
            #expect(g.state == .waiting && g.parentsLeft == 2)
            for _ in 0..<3 {
                for leased in try await store.leaseAll(queue: "d") { try await store.complete(leased.id, lease: leased.lease, result: nil) }
            }
            for id in ids { #expect(try await store.mustGet(id).state == .completed) }

            // A queue redrive: two failed parents of one child come back; the child waits for both.
            let pair = try await store.enqueue([job("p1", queue: "e"), job("p2", queue: "e"),
                                                job("child", queue: "e2", dependsOn: [.request(0), .request(1)])],
                                               defaults: testDefaults, depthLimits: [:]).map(\.job.id)
            for leased in try await store.leaseAll(queue: "e") {
                try await store.fail(leased.id, lease: leased.lease, error: AttemptError(attempt: 1, message: "x", at: Date()), retryAt: nil)
            }
            #expect(try await store.retryFailed(queue: "e", tenant: nil) == 2)
            let child = try await store.mustGet(pair[2])
            #expect(child.state == .waiting && child.parentsLeft == 2)
            // A failed run-anyway child is redriven to wait for its parent that was retried.
            let runner = try await store.enqueue([job("p", queue: "f"), job("c", queue: "f", dependsOn: [.request(0)], policy: .run)],
                                                 defaults: testDefaults, depthLimits: [:]).map(\.job.id)
            let p = try #require(try await store.leaseAll(queue: "f").first)
            try await store.fail(p.id, lease: p.lease, error: AttemptError(attempt: 1, message: "x", at: Date()), retryAt: nil)
            let c = try #require(try await store.leaseAll(queue: "f").first)
            try await store.fail(c.id, lease: c.lease, error: AttemptError(attempt: 1, message: "y", at: Date()), retryAt: nil)
            #expect(try await store.retryFailed(queue: "f", tenant: nil) == 2)
            #expect(try await store.mustGet(runner[1]).state == .waiting)
            #expect(try await store.leaseAll(queue: "f").map(\.id) == [runner[0]])
        }
    }

    @Test("a cancelled batch stops its run-anyway members too; a job refused by a closed batch is not written", arguments: StoreKind.allCases)
    func batchCancelAndRefusal(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            var members = [NewJob(queue: "m", kind: "p", maxAttempts: 1), NewJob(queue: "m", kind: "c", maxAttempts: 1)]
            members[1].dependsOn = [.request(0)]
            members[1].onParentFailure = .run
            let (batch, results) = try await store.createBatch(NewBatch(open: true), jobs: members, defaults: testDefaults, depthLimits: [:])
            let cancelled = try await store.cancelBatch(batch.id, tenant: nil)
            #expect(cancelled.counts[.cancelled] == 2 && cancelled.state == .cancelled)
            for result in results { #expect(try await store.mustGet(result.job.id).state == .cancelled) }
            #expect(try await store.leaseAll(queue: "m").isEmpty)

            let before = try await store.list(JobFilter(limit: 100)).jobs.count
            var late = NewJob(queue: "m", kind: "late")
            late.batchID = batch.id
            await expectSpoolError({ if case .conflict = $0 { true } else { false } }) {
                _ = try await store.enqueue([late], defaults: testDefaults, depthLimits: [:])
            }
            late.batchID = JobID.make(now: Date())
            await expectSpoolError({ if case .invalid(field: "batch_id", _) = $0 { true } else { false } }) {
                _ = try await store.enqueue([late], defaults: testDefaults, depthLimits: [:])
            }
            #expect(try await store.list(JobFilter(limit: 100)).jobs.count == before)
            let stats = try await store.queueStats(tenant: nil).first { $0.name == "m" }
            #expect(stats?.depth == 0 && stats?.counts[.cancelled] == 2)
        }
    }

    @Test("parents named by id: a finished one counts, a missing or foreign one refuses the whole call", arguments: StoreKind.allCases)
    func parentsByID(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let parent = try await store.add(kind: "p").job.id
            let leased = try #require(try await ready(store).first)
            try await store.complete(leased.id, lease: leased.lease, result: Data("7".utf8))
            let child = try await store.enqueue([job("c", dependsOn: [.job(parent)])], defaults: testDefaults, depthLimits: [:])[0].job
            #expect(child.state == .pending)
            #expect(try await ready(store).first?.parents.first?.result == Data("7".utf8))

            let waiting = try await store.add(kind: "p2").job.id
            let child2 = try await store.enqueue([job("c2", dependsOn: [.job(waiting), .job(parent)])], defaults: testDefaults, depthLimits: [:])[0].job
            #expect(child2.state == .waiting && child2.parentsLeft == 1)

            let foreign = try await store.add(kind: "p", tenant: "globex").job.id
            let before = try await store.list(JobFilter(limit: 100)).jobs.count
            for bad in [JobID.make(now: Date()), foreign] {
                await expectSpoolError({ if case .invalid(field: "jobs[1].depends_on", _) = $0 { true } else { false } }) {
                    _ = try await store.enqueue([job("ok"), job("c3", dependsOn: [.job(bad)])], defaults: testDefaults, depthLimits: [:])
                }
            }
            await expectSpoolError({ if case .invalid = $0 { true } else { false } }) {
                _ = try await store.enqueue([job("c4", dependsOn: [.request(0)])], defaults: testDefaults, depthLimits: [:])
            }
            #expect(try await store.list(JobFilter(limit: 100)).jobs.count == before)
        }
    }

    @Test("a batch of 1,000 jobs fires its callback once, also when its last two jobs finish at once in two processes", arguments: StoreKind.allCases)
    func batchCallbackOnce(kind: StoreKind) async throws {
        try await withTwoStores(kind) { store, other in
            let jobs = (0..<1000).map { _ in NewJob(queue: "b", kind: "work", maxAttempts: 1) }
            let (batch, results) = try await store.createBatch(
                NewBatch(callback: BatchCallback(queue: "cb", kind: "done", payload: .object(["note": "all"]))), jobs: jobs,
                defaults: testDefaults, depthLimits: [:])
            #expect(batch.state == .closed && batch.total == 1000 && results.count == 1000)
            #expect(results.allSatisfy { $0.job.batchID == batch.id })
            let leased = try await store.leaseAll(queue: "b", limit: 1000)
            #expect(leased.count == 1000)
            for job in leased.dropLast(2) { try await store.complete(job.id, lease: job.lease, result: nil) }
            let failing = leased[leased.count - 2], last = leased[leased.count - 1]
            #expect(try await store.batch(batch.id, tenant: nil)?.state == .closed)
            #expect(try await store.leaseAll(queue: "cb").isEmpty)
            // The last two from two store instances (two processes' pools) at the same moment.
            async let one: Void = store.fail(failing.id, lease: failing.lease, error: AttemptError(attempt: 1, message: "x", at: Date()), retryAt: nil)
            async let two: Void = other.complete(last.id, lease: last.lease, result: nil)
            _ = try await (one, two)
            let finished = try #require(try await store.batch(batch.id, tenant: nil))
            #expect(finished.state == .finished && finished.finishedAt != nil)
            #expect(finished.counts[.completed] == 999 && finished.counts[.failed] == 1)
            let callbacks = try await store.leaseAll(queue: "cb")
            #expect(callbacks.count == 1)
            #expect(finished.callbackJobID == callbacks.first?.id)
            let payload = try #require(callbacks.first.flatMap { JSONValue(json: $0.job.payload) })
            guard case .object(let body) = payload, case .object(let figures)? = body["batch"] else {
                Issue.record("callback payload: \(payload)")
                return
            }
            #expect(body["payload"] == .object(["note": "all"]))
            #expect(figures["total"] == .integer(1000) && figures["completed"] == .integer(999) && figures["failed"] == .integer(1))
            #expect(figures["failed_job_ids"] == .array([.string(failing.id.description)]))
            let members = try await store.list(JobFilter(batchID: batch.id, limit: 1000))
            #expect(members.jobs.count == 1000)
        }
    }

    @Test("an open batch takes more jobs until closed; on_failure runs instead of callback; a cancelled batch runs none", arguments: StoreKind.allCases)
    func openBatchAndFailureCallback(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let spec = NewBatch(callback: BatchCallback(queue: "cb", kind: "ok"), onFailure: BatchCallback(queue: "cb", kind: "bad"), open: true)
            let (batch, _) = try await store.createBatch(spec, jobs: [NewJob(queue: "b", kind: "w", maxAttempts: 1)], defaults: testDefaults, depthLimits: [:])
            #expect(batch.state == .open)
            var more = NewJob(queue: "b", kind: "w", maxAttempts: 1)
            more.batchID = batch.id
            _ = try await store.enqueue([more], defaults: testDefaults, depthLimits: [:])
            let leased = try await store.leaseAll(queue: "b")
            #expect(leased.count == 2)
            try await store.complete(leased[0].id, lease: leased[0].lease, result: nil)
            try await store.fail(leased[1].id, lease: leased[1].lease, error: AttemptError(attempt: 1, message: "x", at: Date()), retryAt: nil)
            #expect(try await store.batch(batch.id, tenant: nil)?.state == .open)  // not closed: no callback yet
            #expect(try await store.leaseAll(queue: "cb").isEmpty)
            let closed = try await store.closeBatch(batch.id, tenant: nil)
            #expect(closed.state == .finished && closed.total == 2)
            #expect(try await store.leaseAll(queue: "cb").map(\.job.kind) == ["bad"])
            await expectSpoolError({ if case .conflict = $0 { true } else { false } }) {
                var late = NewJob(queue: "b", kind: "w")
                late.batchID = batch.id
                _ = try await store.enqueue([late], defaults: testDefaults, depthLimits: [:])
            }
            await expectSpoolError({ if case .batchNotFound = $0 { true } else { false } }) {
                _ = try await store.closeBatch(batch.id, tenant: "globex")
            }

            let (second, _) = try await store.createBatch(NewBatch(callback: BatchCallback(queue: "cb", kind: "ok")),
                                                          jobs: (0..<3).map { _ in NewJob(queue: "c", kind: "w") }, defaults: testDefaults, depthLimits: [:])
            let cancelled = try await store.cancelBatch(second.id, tenant: nil)
            #expect(cancelled.state == .cancelled && cancelled.counts[.cancelled] == 3 && cancelled.finishedAt != nil)
            #expect(try await store.leaseAll(queue: "c").isEmpty)
            #expect(try await store.leaseAll(queue: "cb").isEmpty)
            let member = try #require(try await store.list(JobFilter(batchID: second.id, limit: 10)).jobs.first)
            #expect(member.cancelReason == "batch \(second.id) was cancelled")
        }
    }

    @Test("a published event makes one job per matching subscriber, atomically; a key publishes once", arguments: StoreKind.allCases)
    func publish(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let spool = Spool(store: store)
            for (name, queue) in [("billing", "bill"), ("email", "mail"), ("audit", "audit")] {
                try await spool.subscribe(TopicSubscription(tenant: "acme", topic: "order.created", name: name, queue: queue, kind: "on.order"))
            }
            try await spool.subscribe(TopicSubscription(tenant: "acme", topic: "order.created", name: "eu-only", queue: "eu", kind: "on.order",
                                                        filter: ["region": ["eu"]]))
            try await spool.subscribe(TopicSubscription(tenant: "globex", topic: "order.created", name: "theirs", queue: "g", kind: "on.order"))
            let first = try await spool.publish(topic: "order.created", payload: Data(#"{"order":1}"#.utf8), attributes: ["region": "us"],
                                                idempotencyKey: "order-1", tenant: "acme")
            #expect(!first.replayed && first.event.jobIDs.count == 3)
            let again = try await spool.publish(topic: "order.created", payload: Data(#"{"order":1}"#.utf8), attributes: ["region": "us"],
                                                idempotencyKey: "order-1", tenant: "acme")
            #expect(again.replayed && again.event.id == first.event.id && again.event.jobIDs == first.event.jobIDs)
            await expectSpoolError({ if case .idempotencyConflict = $0 { true } else { false } }) {
                _ = try await spool.publish(topic: "order.created", payload: Data(#"{"order":2}"#.utf8), idempotencyKey: "order-1", tenant: "acme")
            }
            #expect(try await store.list(JobFilter(tenant: "acme", limit: 100)).jobs.count == 3)
            #expect(try await store.list(JobFilter(tenant: "globex", limit: 100)).jobs.isEmpty)

            // One subscriber fails for good; the other two complete.
            let bill = try #require(try await store.leaseAll(queue: "bill").first)
            #expect(JSONValue(json: bill.job.payload) == .object(["order": .integer(1)]))
            try await store.fail(bill.id, lease: bill.lease, error: AttemptError(attempt: 1, message: "card declined", at: Date()), retryAt: nil)
            for queue in ["mail", "audit"] {
                let leased = try #require(try await store.leaseAll(queue: queue).first)
                try await store.complete(leased.id, lease: leased.lease, result: nil)
            }
            let states = try await first.event.jobIDs.asyncMap { try await store.mustGet($0).state }
            #expect(states.sorted(by: { $0.rawValue < $1.rawValue }) == [.completed, .completed, .failed])

            // Nobody listening: recorded anyway. A late subscriber replays what it missed, once.
            let lonely = try await spool.publish(topic: "nobody.listens", tenant: "acme")
            #expect(lonely.event.jobIDs.isEmpty)
            try await spool.subscribe(TopicSubscription(tenant: "acme", topic: "nobody.listens", name: "late", queue: "late", kind: "k"))
            #expect(try await spool.replay(topic: "nobody.listens", subscriber: "late", tenant: "acme", since: Date(timeIntervalSinceNow: -60)) == 1)
            #expect(try await spool.replay(topic: "nobody.listens", subscriber: "late", tenant: "acme", since: Date(timeIntervalSinceNow: -60)) == 0)
            #expect(try await store.leaseAll(queue: "late").count == 1)

            let overview = try await spool.topicOverview(tenant: "acme")
            let orders = try #require(overview.first { $0.topic == "order.created" })
            #expect(orders.events == 1 && orders.subscribers.count == 4)
            #expect(orders.subscribers.first { $0.name == "billing" }?.jobs == 1)
            #expect(orders.subscribers.first { $0.name == "eu-only" }?.jobs == 0)
            #expect(overview.first { $0.topic == "nobody.listens" }?.events == 1)
        }
    }

    /// Two stores on one database, as two processes would have.
    private func withTwoStores(_ kind: StoreKind, _ body: (any JobStore, any JobStore) async throws -> Void) async throws {
        switch kind {
        case .sqlite:
            let dir = TempDir()
            defer { dir.remove() }
            let a = try SQLiteJobStore(path: dir.file("spool.sqlite")), b = try SQLiteJobStore(path: dir.file("spool.sqlite"))
            try await a.migrate()
            do { try await body(a, b) } catch {
                try? await a.close(); try? await b.close()
                throw error
            }
            try await a.close(); try await b.close()
        case .postgres:
            try await PostgresTestDatabase.with { url in
                let a = try PostgresJobStore(url: url), b = try PostgresJobStore(url: url)
                try await a.migrate()
                do { try await body(a, b) } catch {
                    try? await a.close(); try? await b.close()
                    throw error
                }
                try await a.close(); try await b.close()
            }
        }
    }
}

extension Sequence {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}
