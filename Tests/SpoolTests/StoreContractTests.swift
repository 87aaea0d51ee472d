import Foundation
import SpoolCore
import Synchronization
import Testing

/// The contract every `JobStore` keeps. Each test runs once per store kind.
@Suite("Store contract")
struct StoreContractTests {
    @Test("enqueue stores every field and get returns it", arguments: StoreKind.allCases)
    func enqueueAndGet(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let request = NewJob(queue: "emails", kind: "send", payload: Data(#"{"to":"a@b.c","n":[1,2]}"#.utf8), priority: 5,
                                 maxAttempts: 7, timeout: .seconds(12), idempotencyKey: "k1", callbackURL: "https://example.com/hook",
                                 tags: ["a", "b"], tenant: "acme")
            let result = try await store.enqueue([request], defaults: [:], depthLimits: [:])[0]
            #expect(!result.replayed)
            let job = try await store.mustGet(result.job.id)
            #expect(job.state == .pending)
            #expect(job.queue == "emails" && job.kind == "send" && job.tenant == "acme")
            #expect(job.priority == 5 && job.maxAttempts == 7 && job.timeout == .seconds(12))
            #expect(job.attempt == 0)
            #expect(JSONValue(json: job.payload) == JSONValue(json: request.payload))
            #expect(job.idempotencyKey == "k1" && job.callbackURL == "https://example.com/hook" && job.tags == ["a", "b"])
            #expect(abs(job.createdAt.timeIntervalSinceNow) < 5)
            #expect(job.startedAt == nil && job.finishedAt == nil && job.result == nil && job.errors.isEmpty)
        }
    }

    @Test("ids are time-ordered UUIDv7", arguments: StoreKind.allCases)
    func idsAreOrdered(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            var ids: [JobID] = []
            for _ in 0..<50 { ids.append(try await store.add().job.id) }
            #expect(ids == ids.sorted())
            #expect(ids.allSatisfy { $0.description.dropFirst(14).first == "7" })
            #expect(Set(ids).count == 50)
        }
    }

    @Test("a batch is all or nothing", arguments: StoreKind.allCases)
    func batchIsAtomic(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let ok = try await store.enqueue((0..<3).map { _ in NewJob(queue: "q", kind: "k") }, defaults: [:], depthLimits: [:])
            #expect(ok.count == 3)
            // The second queue of this batch is over its limit: nothing of the batch is written.
            await expectSpoolError({ if case .queueFull(queue: "small", limit: 1, _) = $0 { true } else { false } }) {
                _ = try await store.enqueue(
                    [NewJob(queue: "q", kind: "k"), NewJob(queue: "small", kind: "k"), NewJob(queue: "small", kind: "k")],
                    defaults: [:], depthLimits: ["small": 1])
            }
            let all = try await store.list(JobFilter(limit: 100))
            #expect(all.jobs.count == 3)
        }
    }

    @Test("lease hands out highest priority first, then FIFO", arguments: StoreKind.allCases)
    func leaseOrder(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let low1 = try await store.add(priority: 0).job.id
            let high = try await store.add(priority: 10).job.id
            let low2 = try await store.add(priority: 0).job.id
            let mid = try await store.add(priority: 5).job.id
            _ = try await store.add(queue: "other")
            var order: [JobID] = []
            for _ in 0..<5 { order += try await store.leaseAll(limit: 1).map(\.id) }
            #expect(order == [high, mid, low1, low2])
            let leased = try await store.mustGet(high)
            #expect(leased.state == .processing && leased.attempt == 1 && leased.startedAt != nil)
            #expect(leased.workerID == "w1" && leased.leaseExpiresAt != nil)
        }
    }

    @Test("lease respects its limit and each job goes to one worker", arguments: StoreKind.allCases)
    func leaseLimit(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            for _ in 0..<10 { try await store.add() }
            let a = try await store.leaseAll(limit: 4, worker: "a")
            let b = try await store.leaseAll(limit: 100, worker: "b")
            let c = try await store.leaseAll(limit: 100, worker: "c")
            #expect(a.count == 4 && b.count == 6 && c.isEmpty)
            #expect(Set(a.map(\.id)).isDisjoint(with: b.map(\.id)))
        }
    }

    @Test("a lease takes only the kinds and the tenant it names, in priority order", arguments: StoreKind.allCases)
    func leaseFilters(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            var ids: [String: JobID] = [:]
            for (tenant, jobKind, priority) in [("t1", "a", 0), ("t1", "b", 0), ("t2", "a", 0), ("t1", "a", 5), ("t2", "c", 0)] {
                let job = NewJob(queue: "q", kind: jobKind, priority: priority, tenant: tenant)
                ids["\(tenant)/\(jobKind)/\(priority)"] = try await store.enqueue([job], defaults: [:], depthLimits: [:])[0].job.id
            }
            func lease(_ kinds: [String]?, _ tenant: String?) async throws -> [JobID] {
                try await store.lease(LeaseRequest(queue: "q", limit: 10, workerID: "w", leaseDuration: .seconds(30),
                                                   kinds: kinds, tenant: tenant)).jobs.map(\.job.id)
            }
            #expect(try await lease(["a"], "t1") == [ids["t1/a/5"]!, ids["t1/a/0"]!])
            #expect(try await lease(["a", "b"], "t2") == [ids["t2/a/0"]!])
            #expect(try await lease(["zzz"], nil).isEmpty)
            #expect(try await lease(["b", "c"], nil) == [ids["t1/b/0"]!, ids["t2/c/0"]!])
        }
    }

    @Test("the worker registry: record, refresh, one tenant's view, lost, pruned, removed", arguments: StoreKind.allCases)
    func workerRegistry(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let start = Date(timeIntervalSince1970: 1_800_000_000)
            var local = WorkerInfo(id: "host:1:a", name: "spool worker", host: "host", pid: 1, queues: ["q"], kinds: ["k1", "k2"],
                                   concurrency: 8, startedAt: start, lastSeenAt: start, expiresAt: start.addingTimeInterval(30))
            let remote = WorkerInfo(id: "py-1", tenant: "acme", name: "py", version: "spool-python/0.1", queues: ["q", "r"], kinds: ["k3"],
                                    concurrency: 4, running: 2, startedAt: start, lastSeenAt: start, expiresAt: start.addingTimeInterval(90))
            try await store.recordWorker(local)
            try await store.recordWorker(remote)
            #expect(try await store.workers(tenant: nil) == [local, remote])
            #expect(try await store.workers(tenant: "acme") == [remote])
            #expect(try await store.workers(tenant: "other").isEmpty)

            // A refresh changes everything but the start.
            local.running = 3
            local.lastSeenAt = start.addingTimeInterval(10)
            local.expiresAt = start.addingTimeInterval(40)
            var restarted = local
            restarted.startedAt = start.addingTimeInterval(5)
            try await store.recordWorker(restarted)
            #expect(try await store.workers(tenant: nil).first == local)
            // Another tenant cannot take over an id.
            var impostor = remote
            impostor.tenant = "evil"
            impostor.kinds = ["stolen"]
            try await store.recordWorker(impostor)
            #expect(try await store.workers(tenant: "acme") == [remote])
            #expect(try await store.workers(tenant: "evil").isEmpty)

            #expect(local.state(at: start.addingTimeInterval(39)) == "active" && local.state(at: start.addingTimeInterval(41)) == "lost")
            #expect(try await store.pruneWorkers(expiredBefore: start.addingTimeInterval(60)) == 1)
            #expect(try await store.workers(tenant: nil).map(\.id) == ["py-1"])
            try await store.removeWorker(id: "py-1")
            #expect(try await store.workers(tenant: nil).isEmpty)
        }
    }

    @Test("queue statistics: rows from several writers are kept apart and merge on read; a batch is written once; filters; pruning", arguments: StoreKind.allCases)
    func queueStatistics(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            var wait = LatencyHistogram(), run = LatencyHistogram()
            wait.add(milliseconds: 3)
            run.add(milliseconds: 40)
            run.add(milliseconds: 4000)
            let minute: Int64 = 29_000_000
            try await store.recordQueueMinutes([
                QueueMinute(tenant: "acme", queue: "q", minute: minute, completed: 5, failed: 1, retried: 2, wait: wait, run: run),
                QueueMinute(tenant: "globex", queue: "q", minute: minute, completed: 7),
                QueueMinute(tenant: "acme", queue: "other", minute: minute + 1, completed: 1),
                QueueMinute(tenant: "acme", queue: "q", minute: minute - 30, completed: 100),
            ], writer: "p1", batch: "b1")
            let second = [QueueMinute(tenant: "acme", queue: "q", minute: minute, completed: 3, wait: wait)]
            try await store.recordQueueMinutes(second, writer: "p2", batch: "b1")
            // The same batch again (a retried write that had committed): ignored.
            try await store.recordQueueMinutes(second, writer: "p2", batch: "b1")
            try await store.recordQueueMinutes([], writer: "p3", batch: "b1")

            let acme = try await store.queueMinutes(from: minute, to: minute + 2, tenant: "acme", queue: "q")
            #expect(acme.count == 2 && acme.map(\.completed).sorted() == [3, 5], "each writer's row is kept")
            let merged = StatsBucket.merge(acme, from: minute, count: 2, minutes: 1)
            #expect(merged[0].completed == 8 && merged[0].failed == 1 && merged[0].retried == 2 && merged[1].completed == 0)
            #expect(merged[0].wait.total == 2 && merged[0].run.total == 2 && merged[0].run.percentile(0.5) == 50 && merged[0].run.percentile(0.95) == 5000)
            #expect(try await store.queueMinutes(from: minute, to: minute + 2, tenant: nil, queue: nil).map(\.completed).reduce(0, +) == 16)
            #expect(try await store.queueMinutes(from: minute, to: minute + 2, tenant: "globex", queue: nil).map(\.completed) == [7])
            #expect(try await store.queueMinutes(from: minute, to: minute + 1, tenant: "acme", queue: "other").isEmpty)

            #expect(try await store.pruneQueueMinutes(before: minute) == 1)
            #expect(try await store.queueMinutes(from: 0, to: minute, tenant: nil, queue: nil).isEmpty)
            #expect(try await store.queueMinutes(from: 0, to: minute + 10, tenant: nil, queue: nil).count == 4)
        }
    }

    @Test("a delayed job waits for its run_at", arguments: StoreKind.allCases)
    func delayedJob(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            // Far in the future, so that a slow machine cannot reach it during the test.
            let later = Date().addingTimeInterval(3600)
            let waiting = try await store.add(runAt: later).job.id
            #expect(try await store.mustGet(waiting).state == .scheduled)
            let early = try await store.lease(queue: "q", limit: 10, workerID: "w", leaseDuration: .seconds(30))
            #expect(early.jobs.isEmpty)
            let next = try #require(early.nextRunAt)
            #expect(abs(next.timeIntervalSince(later)) < 0.01)
            // A job due soon is leased once due; the far one still waits.
            let soon = Date().addingTimeInterval(0.3)
            let due = try await store.add(runAt: soon).job.id
            try await Task.sleep(until: .now + .seconds(max(0, soon.timeIntervalSinceNow) + 0.05))
            #expect(try await store.leaseAll().map(\.id) == [due])
            #expect(try await store.mustGet(waiting).state == .scheduled)
        }
    }

    @Test("fencing: a stale lease can change nothing", arguments: StoreKind.allCases)
    func fencing(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let id = try await store.add().job.id
            let first = try #require(try await store.leaseAll(lease: .milliseconds(100)).first)
            try await Task.sleep(for: .milliseconds(150))
            #expect(try await store.rescueExpiredLeases() == 1)
            let rescued = try await store.mustGet(id)
            #expect(rescued.state == .pending)
            #expect(rescued.errors.map(\.reason) == ["lease_expired"])
            let second = try #require(try await store.leaseAll(worker: "w2").first)
            #expect(second.lease != first.lease && second.job.attempt == 2)

            // The first worker wakes up: every call it makes is rejected and changes nothing.
            #expect(try await store.heartbeat([(id, first.lease)], leaseDuration: .seconds(30)) == [id])
            await expectSpoolError({ $0 == .leaseLost(id) }) { try await store.complete(id, lease: first.lease, result: Data("1".utf8)) }
            await expectSpoolError({ $0 == .leaseLost(id) }) {
                try await store.fail(id, lease: first.lease, error: AttemptError(attempt: 1, message: "x", at: Date()), retryAt: nil)
            }
            await expectSpoolError({ $0 == .leaseLost(id) }) { try await store.reportProgress(id, lease: first.lease, progress: JobProgress(percent: 50)) }
            await expectSpoolError({ $0 == .leaseLost(id) }) { try await store.release(id, lease: first.lease) }
            let unchanged = try await store.mustGet(id)
            #expect(unchanged.state == .processing && unchanged.workerID == "w2" && unchanged.progress == nil)

            // The rightful worker completes.
            #expect(try await store.heartbeat([(id, second.lease)], leaseDuration: .seconds(30)).isEmpty)
            try await store.reportProgress(id, lease: second.lease, progress: JobProgress(percent: 40, message: "half"))
            #expect(try await store.mustGet(id).progress == JobProgress(percent: 40, message: "half"))
            try await store.complete(id, lease: second.lease, result: Data(#"{"ok":true}"#.utf8))
            let done = try await store.mustGet(id)
            #expect(done.state == .completed && done.finishedAt != nil)
            #expect(JSONValue(json: try #require(done.result)) == .object(["ok": .bool(true)]))
        }
    }

    @Test("an expired lease on the last attempt fails the job", arguments: StoreKind.allCases)
    func rescueOnLastAttempt(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let id = try await store.add(maxAttempts: 1).job.id
            _ = try await store.leaseAll(lease: .milliseconds(50))
            try await Task.sleep(for: .milliseconds(100))
            #expect(try await store.rescueExpiredLeases() == 1)
            let job = try await store.mustGet(id)
            #expect(job.state == .failed && job.finishedAt != nil && job.errors.count == 1)
        }
    }

    @Test("fail schedules a retry or fails for good, keeping every error", arguments: StoreKind.allCases)
    func failAndRetry(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let id = try await store.add().job.id
            var leased = try #require(try await store.leaseAll().first)
            let retryAt = Date().addingTimeInterval(3)
            try await store.fail(id, lease: leased.lease, error: AttemptError(attempt: 1, message: "boom 1", at: Date()), retryAt: retryAt)
            var job = try await store.mustGet(id)
            #expect(job.state == .scheduled && abs(job.runAt.timeIntervalSince(retryAt)) < 0.01 && job.finishedAt == nil)
            // Not handed out before its time (checked when the machine is not so loaded that
            // the time has nearly come already).
            let checkedEarly = Date() < retryAt.addingTimeInterval(-1)
            let early = try await store.leaseAll()
            if checkedEarly { #expect(early.isEmpty) }
            if let first = early.first {
                leased = first
            } else {
                try await Task.sleep(until: .now + .seconds(max(0, retryAt.timeIntervalSinceNow) + 0.05))
                leased = try #require(try await store.leaseAll().first)
            }
            #expect(leased.job.attempt == 2)
            try await store.fail(id, lease: leased.lease, error: AttemptError(attempt: 2, message: "boom 2", at: Date()), retryAt: Date())
            #expect(try await store.mustGet(id).state == .pending)
            leased = try #require(try await store.leaseAll().first)
            try await store.fail(id, lease: leased.lease, error: AttemptError(attempt: 3, message: "boom 3", at: Date(), reason: "timeout"), retryAt: nil)
            job = try await store.mustGet(id)
            #expect(job.state == .failed && job.finishedAt != nil)
            #expect(job.errors.map(\.message) == ["boom 1", "boom 2", "boom 3"])
            #expect(job.errors.map(\.attempt) == [1, 2, 3])
            #expect(job.errors.last?.reason == "timeout")
        }
    }

    @Test("cancel: pending and running jobs, not finished ones", arguments: StoreKind.allCases)
    func cancel(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let pending = try await store.add().job.id
            let cancelled = try await store.cancel(pending, tenant: nil)
            #expect(cancelled.state == .cancelled && cancelled.finishedAt != nil)
            #expect(try await store.leaseAll().isEmpty)

            let running = try await store.add().job.id
            let leased = try #require(try await store.leaseAll().first)
            let signalled = SignalRecorder(store)
            _ = try await store.cancel(running, tenant: nil)
            #expect(await eventually { signalled.contains(.jobCancelled(running)) })
            await expectSpoolError({ $0 == .leaseLost(running) }) { try await store.complete(running, lease: leased.lease, result: nil) }
            #expect(try await store.heartbeat([(running, leased.lease)], leaseDuration: .seconds(30)) == [running])
            #expect(try await store.mustGet(running).state == .cancelled)

            await expectSpoolError({ if case .invalidTransition(_, .cancelled, "cancel") = $0 { true } else { false } }) {
                _ = try await store.cancel(running, tenant: nil)
            }
            await expectSpoolError({ $0 == .notFound(JobID.make()) || { if case .notFound = $0 { true } else { false } }($0) }) {
                _ = try await store.cancel(JobID.make(), tenant: nil)
            }
        }
    }

    @Test("retry by hand: failed and cancelled only, with a fresh set of attempts", arguments: StoreKind.allCases)
    func retryByHand(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let id = try await store.add(maxAttempts: 1).job.id
            let leased = try #require(try await store.leaseAll().first)
            await expectSpoolError({ if case .invalidTransition(_, .processing, "retry") = $0 { true } else { false } }) {
                _ = try await store.retry(id, tenant: nil)
            }
            try await store.fail(id, lease: leased.lease, error: AttemptError(attempt: 1, message: "x", at: Date()), retryAt: nil)
            let retried = try await store.retry(id, tenant: nil)
            #expect(retried.state == .pending && retried.attempt == 0 && retried.finishedAt == nil && retried.errors.count == 1)
            let again = try #require(try await store.leaseAll().first)
            #expect(again.job.attempt == 1)
            try await store.complete(id, lease: again.lease, result: nil)
            await expectSpoolError({ if case .invalidTransition(_, .completed, "retry") = $0 { true } else { false } }) {
                _ = try await store.retry(id, tenant: nil)
            }

            // With an allowance, attempts are numbered on (the engine's retry): a reader of the
            // errors can tell the runs apart.
            let second = try await store.add(maxAttempts: 2).job.id
            for n in 1...2 {
                let lease = try #require(try await store.leaseAll().first { $0.id == second })
                try await store.fail(second, lease: lease.lease, error: AttemptError(attempt: n, message: "run 1", at: Date()), retryAt: n < 2 ? Date() : nil)
            }
            let numbered = try await store.retry(second, tenant: nil, attempts: 3)
            #expect(numbered.state == .pending && numbered.attempt == 2 && numbered.maxAttempts == 5, "\(numbered.attempt)/\(numbered.maxAttempts)")
            #expect(try await store.leaseAll().first { $0.id == second }?.job.attempt == 3)
            // A queue's redrive does the same.
            let third = try await store.add(maxAttempts: 1).job.id
            let lease = try #require(try await store.leaseAll().first { $0.id == third })
            try await store.fail(third, lease: lease.lease, error: AttemptError(attempt: 1, message: "x", at: Date()), retryAt: nil)
            #expect(try await store.retryFailed(queue: "q", tenant: nil, attempts: 4) == 1)
            let redriven = try await store.mustGet(third)
            #expect(redriven.state == .pending && redriven.attempt == 1 && redriven.maxAttempts == 5)
        }
    }

    @Test("release gives a job back without counting the attempt", arguments: StoreKind.allCases)
    func release(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let id = try await store.add().job.id
            let leased = try #require(try await store.leaseAll().first)
            try await store.release(id, lease: leased.lease)
            let job = try await store.mustGet(id)
            #expect(job.state == .pending && job.attempt == 0)
            #expect(try await store.leaseAll().first?.job.attempt == 1)
        }
    }

    @Test("idempotency keys: same request replays, different request conflicts, per tenant", arguments: StoreKind.allCases)
    func idempotency(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let first = try await store.add(payload: #"{"a":1,"b":2}"#, key: "order-1")
            #expect(!first.replayed)
            let replay = try await store.add(payload: #"{ "b": 2, "a": 1 }"#, key: "order-1")
            #expect(replay.replayed && replay.job.id == first.job.id)
            await expectSpoolError({ $0 == .idempotencyConflict(key: "order-1", existing: first.job.id) }) {
                try await store.add(payload: #"{"a":2}"#, key: "order-1")
            }
            let otherTenant = try await store.add(payload: #"{"a":1,"b":2}"#, key: "order-1", tenant: "other")
            #expect(!otherTenant.replayed && otherTenant.job.id != first.job.id)
            // Two jobs with one key in one batch: one job.
            let batch = try await store.enqueue(
                [NewJob(queue: "q", kind: "k", idempotencyKey: "dup"), NewJob(queue: "q", kind: "k", idempotencyKey: "dup")],
                defaults: [:], depthLimits: [:])
            #expect(batch[0].job.id == batch[1].job.id && !batch[0].replayed && batch[1].replayed)
            #expect(try await store.list(JobFilter(limit: 100)).jobs.count == 3)
        }
    }

    @Test("50 concurrent enqueues with one idempotency key make exactly one job", arguments: StoreKind.allCases)
    func idempotencyUnderConcurrency(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let results = try await withThrowingTaskGroup(of: EnqueueResult.self) { group in
                for _ in 0..<50 { group.addTask { try await store.add(payload: #"{"x":1}"#, key: "same") } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(Set(results.map(\.job.id)).count == 1)
            #expect(results.filter { !$0.replayed }.count == 1)
            #expect(try await store.list(JobFilter(limit: 100)).jobs.count == 1)
        }
    }

    @Test("depth limit refuses enqueues past it and writes nothing", arguments: StoreKind.allCases)
    func depthLimit(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            for _ in 0..<3 { try await store.add(depthLimit: 3) }
            await expectSpoolError({ if case .queueFull("q", 3, _) = $0 { true } else { false } }) { try await store.add(depthLimit: 3) }
            #expect(try await store.queueStats(tenant: nil).first { $0.name == "q" }?.depth == 3)
            // Running jobs do not count towards the depth.
            _ = try await store.leaseAll(limit: 1)
            try await store.add(depthLimit: 3)
            #expect(try await store.list(JobFilter(limit: 100)).jobs.count == 4)
        }
    }

    @Test("concurrent single enqueues never pass the depth limit", arguments: StoreKind.allCases)
    func depthLimitUnderConcurrency(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let outcomes = await withTaskGroup(of: Bool.self) { group in
                for _ in 0..<40 {
                    group.addTask { (try? await store.add(queue: "busy", depthLimit: 7)) != nil }
                }
                return await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            #expect(outcomes.filter { $0 }.count == 7)
            let written = try await store.list(JobFilter(queue: "busy", limit: 100)).jobs.count
            let depth = try await store.queueStats(tenant: nil).first { $0.name == "busy" }?.depth
            #expect(written == 7 && depth == 7)
        }
    }

    @Test("single enqueues from many callers keep FIFO order per caller and all land", arguments: StoreKind.allCases)
    func concurrentSingleEnqueues(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let ids = try await withThrowingTaskGroup(of: [JobID].self) { group in
                for caller in 0..<8 {
                    group.addTask {
                        var mine: [JobID] = []
                        for n in 0..<25 { mine.append(try await store.add(payload: #"{"caller":\#(caller),"n":\#(n)}"#).job.id) }
                        return mine
                    }
                }
                return try await group.reduce(into: [[JobID]]()) { $0.append($1) }
            }
            #expect(ids.joined().count == 200 && Set(ids.joined()).count == 200)
            // Leasing one at a time follows enqueue order: each caller's jobs come out in its order.
            var order: [JobID] = []
            for _ in 0..<200 { order += try await store.leaseAll(limit: 1).map(\.id) }
            for mine in ids {
                let positions = mine.map { order.firstIndex(of: $0)! }
                #expect(positions == positions.sorted())
            }
        }
    }

    @Test("a paused queue hands out nothing until resumed", arguments: StoreKind.allCases)
    func pauseResume(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            try await store.add()
            try await store.setPaused(true, queue: "q")
            #expect(try await store.leaseAll().isEmpty)
            #expect(try await store.queueStats(tenant: nil).first { $0.name == "q" }?.paused == true)
            try await store.setPaused(false, queue: "q")
            #expect(try await store.leaseAll().count == 1)
        }
    }

    @Test("prune deletes only finished jobs past their retention", arguments: StoreKind.allCases)
    func prune(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            var finished: [JobID] = []
            for _ in 0..<3 {
                let id = try await store.add().job.id
                let l = try #require(try await store.leaseAll().first)
                try await store.complete(id, lease: l.lease, result: nil)
                finished.append(id)
            }
            let failed = try await store.add(maxAttempts: 1).job.id
            let l = try #require(try await store.leaseAll().first)
            try await store.fail(failed, lease: l.lease, error: AttemptError(attempt: 1, message: "x", at: Date()), retryAt: nil)
            let waiting = try await store.add().job.id
            let cutoff = Date().addingTimeInterval(1)
            // Failed jobs have their own retention: keep them here.
            #expect(try await store.prune(completedBefore: cutoff, failedBefore: nil, limit: 2) == 2)
            #expect(try await store.prune(completedBefore: cutoff, failedBefore: nil, limit: 100) == 1)
            #expect(try await store.job(failed, tenant: nil) != nil)
            #expect(try await store.job(waiting, tenant: nil) != nil)
            #expect(try await store.prune(completedBefore: Date().addingTimeInterval(-60), failedBefore: cutoff, limit: 100) == 1)
            #expect(try await store.job(failed, tenant: nil) == nil)
            for id in finished { #expect(try await store.job(id, tenant: nil) == nil) }
            let counts = try #require(try await store.queueStats(tenant: nil).first { $0.name == "q" }).counts
            #expect(counts[.completed] == 0 && counts[.failed] == 0 && counts[.pending] == 1)
        }
    }

    @Test("queue statistics count every state", arguments: StoreKind.allCases)
    func queueStats(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            for _ in 0..<4 { try await store.add() }
            try await store.add(runAt: Date().addingTimeInterval(60))
            try await store.add(queue: "other")
            let leased = try await store.leaseAll(limit: 2)
            try await store.complete(leased[0].id, lease: leased[0].lease, result: nil)
            let stats = try await store.queueStats(tenant: nil)
            let q = try #require(stats.first { $0.name == "q" })
            #expect(q.counts[.pending] == 2 && q.counts[.scheduled] == 1 && q.counts[.processing] == 1 && q.counts[.completed] == 1)
            #expect(q.depth == 3 && q.oldestPendingAge != nil && !q.paused)
            #expect(stats.first { $0.name == "other" }?.counts[.pending] == 1)
        }
    }

    @Test("list filters and pages with a cursor", arguments: StoreKind.allCases)
    func listAndPaginate(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            var ids: [JobID] = []
            for i in 0..<25 { ids.append(try await store.add(queue: i % 2 == 0 ? "even" : "odd", kind: i % 3 == 0 ? "three" : "k").job.id) }
            var seen: [JobID] = []
            var cursor: String?
            var pages = 0
            repeat {
                let page = try await store.list(JobFilter(limit: 10, cursor: cursor))
                seen += page.jobs.map(\.id)
                cursor = page.nextCursor
                pages += 1
            } while cursor != nil && pages < 10
            #expect(pages == 3)
            #expect(seen == ids.reversed())
            #expect(try await store.list(JobFilter(queue: "even", limit: 100)).jobs.count == 13)
            #expect(try await store.list(JobFilter(queue: "even", kind: "three", limit: 100)).jobs.count == 5)
            _ = try await store.leaseAll(queue: "odd", limit: 2)
            #expect(try await store.list(JobFilter(state: .processing, limit: 100)).jobs.count == 2)
            #expect(try await store.list(JobFilter(queue: "odd", state: .pending, limit: 100)).jobs.count == 10)
            await expectSpoolError({ if case .invalid(field: "cursor", _) = $0 { true } else { false } }) {
                _ = try await store.list(JobFilter(cursor: "not-a-cursor"))
            }
            // By tag (JSON in both stores) and by idempotency key.
            var tagged = NewJob(queue: "tags", kind: "k", idempotencyKey: "order-42")
            tagged.tags = ["nightly", "eu"]
            var other = NewJob(queue: "tags", kind: "k")
            other.tags = ["nightly-2"]
            let defaults = ["tags": JobDefaults(maxAttempts: 1, timeout: .seconds(60))]
            let written = try await store.enqueue([tagged, other], defaults: defaults, depthLimits: [:])
            #expect(try await store.list(JobFilter(tag: "eu")).jobs.map(\.id) == [written[0].job.id])
            #expect(try await store.list(JobFilter(tag: "nightly")).jobs.map(\.id) == [written[0].job.id])
            #expect(try await store.list(JobFilter(queue: "tags", tag: "night")).jobs.isEmpty)
            #expect(try await store.list(JobFilter(idempotencyKey: "order-42")).jobs.map(\.id) == [written[0].job.id])
            #expect(try await store.list(JobFilter(tenant: "someone-else", idempotencyKey: "order-42")).jobs.isEmpty)
        }
    }

    @Test("tenants see and touch only their own jobs", arguments: StoreKind.allCases)
    func tenantIsolation(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let mine = try await store.add(tenant: "a").job.id
            try await store.add(tenant: "b")
            #expect(try await store.job(mine, tenant: "b") == nil)
            #expect(try await store.job(mine, tenant: "a") != nil)
            await expectSpoolError({ $0 == .notFound(mine) }) { _ = try await store.cancel(mine, tenant: "b") }
            await expectSpoolError({ $0 == .notFound(mine) }) { try await store.delete(mine, tenant: "b") }
            #expect(try await store.list(JobFilter(tenant: "b", limit: 100)).jobs.count == 1)
            #expect(try await store.list(JobFilter(tenant: "a", limit: 100)).jobs.map(\.id) == [mine])
            #expect(try await store.purge(queue: "q", tenant: "b") == 1)
            #expect(try await store.job(mine, tenant: nil)?.state == .pending)
        }
    }

    @Test("delete removes finished jobs only; purge and retry-failed act on a whole queue", arguments: StoreKind.allCases)
    func deletePurgeRedrive(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let waiting = try await store.add().job.id
            await expectSpoolError({ if case .invalidTransition(_, .pending, "delete") = $0 { true } else { false } }) {
                try await store.delete(waiting, tenant: nil)
            }
            _ = try await store.cancel(waiting, tenant: nil)
            try await store.delete(waiting, tenant: nil)
            #expect(try await store.job(waiting, tenant: nil) == nil)

            var dead: [JobID] = []
            for _ in 0..<3 {
                let id = try await store.add(maxAttempts: 1).job.id
                let l = try #require(try await store.leaseAll().first)
                try await store.fail(id, lease: l.lease, error: AttemptError(attempt: 1, message: "x", at: Date()), retryAt: nil)
                dead.append(id)
            }
            #expect(try await store.retryFailed(queue: "q", tenant: nil) == 3)
            for id in dead { #expect(try await store.mustGet(id).state == .pending) }
            try await store.add(runAt: Date().addingTimeInterval(60))
            #expect(try await store.purge(queue: "q", tenant: nil) == 4)
            #expect(try await store.list(JobFilter(limit: 100)).jobs.isEmpty)
        }
    }

    @Test("a job with a callback URL schedules one webhook delivery in the same transaction as its terminal state", arguments: StoreKind.allCases)
    func webhookDeliveriesAreScheduled(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            func enqueue(_ url: String?, tenant: String = "acme", maxAttempts: Int = 3) async throws -> JobID {
                try await store.enqueue([NewJob(queue: "q", kind: "k", maxAttempts: maxAttempts, callbackURL: url, tenant: tenant)],
                                        defaults: [:], depthLimits: [:])[0].job.id
            }
            let completes = try await enqueue("https://example.com/done")
            let fails = try await enqueue("https://example.com/failed", maxAttempts: 1)
            let cancelled = try await enqueue("https://example.com/cancelled")
            let silent = try await enqueue(nil)
            let retried = try await enqueue("https://example.com/retried", maxAttempts: 2)
            for job in try await store.leaseAll() {
                switch job.id {
                case completes, silent: try await store.complete(job.id, lease: job.lease, result: nil)
                case fails: try await store.fail(job.id, lease: job.lease, error: AttemptError(attempt: 1, message: "x", at: Date()), retryAt: nil)
                case retried: try await store.fail(job.id, lease: job.lease, error: AttemptError(attempt: 1, message: "x", at: Date()), retryAt: Date())
                default: break
                }
            }
            _ = try await store.cancel(cancelled, tenant: nil)

            for (id, event, url) in [(completes, "job.completed", "https://example.com/done"), (fails, "job.failed", "https://example.com/failed"),
                                     (cancelled, "job.cancelled", "https://example.com/cancelled")] {
                let deliveries = try await store.webhookDeliveries(of: id, tenant: "acme")
                #expect(deliveries.count == 1, "\(event)")
                guard let d = deliveries.first else { continue }
                #expect(d.event == event && d.url == url && d.jobID == id && d.attempts.isEmpty && d.status == "pending")
                // The delivery is a job on the internal queue, of the job's tenant.
                let delivery = try await store.mustGet(d.id)
                #expect(delivery.queue == Webhook.queue && delivery.kind == Webhook.kind && delivery.tenant == "acme")
                #expect(delivery.maxAttempts == Webhook.maxAttempts && delivery.state == .pending)
                let payload = try JSON.decode(Webhook.Payload.self, from: delivery.payload)
                #expect(payload.job_id == id.description && payload.url == url && payload.event == event)
                // The job as it finished travels with the delivery (it may be deleted before).
                #expect(payload.job?.id == id.description && payload.job.map { "job." + $0.state.rawValue } == event)
                // Another tenant sees nothing.
                #expect(try await store.webhookDeliveries(of: id, tenant: "globex").isEmpty)
            }
            #expect(try await store.webhookDeliveries(of: silent, tenant: nil).isEmpty)
            #expect(try await store.webhookDeliveries(of: retried, tenant: nil).isEmpty, "a retry is not terminal")

            // Attempts are recorded on the delivery, in order.
            let d = try #require(try await store.webhookDeliveries(of: completes, tenant: nil).first)
            try await store.recordWebhookAttempt(WebhookAttempt(attempt: 1, at: Date(), statusCode: 500, durationMs: 3.5, error: "receiver answered 500"), delivery: d.id)
            try await store.recordWebhookAttempt(WebhookAttempt(attempt: 2, at: Date(), statusCode: 200, durationMs: 1.25, error: nil), delivery: d.id)
            let leased = try #require(try await store.leaseAll(queue: Webhook.queue).first { $0.id == d.id })
            try await store.complete(leased.id, lease: leased.lease, result: nil)
            let after = try #require(try await store.webhookDeliveries(of: completes, tenant: nil).first)
            #expect(after.attempts.map(\.status_code) == [500, 200] && after.attempts[0].duration_ms == 3.5)
            #expect(after.status == "delivered")
            #expect(try await store.webhookDeliveries(of: d.id, tenant: nil).isEmpty, "a delivery job has no callback of its own")
        }
    }

    @Test("each tenant has one stable webhook secret", arguments: StoreKind.allCases)
    func webhookSecrets(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let secrets = try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<10 { group.addTask { try await store.webhookSecret(tenant: "acme") } }
                return try await group.reduce(into: Set<String>()) { $0.insert($1) }
            }
            #expect(secrets.count == 1)
            let acme = try #require(secrets.first)
            #expect(acme.hasPrefix("whsec_") && Data(base64Encoded: String(acme.dropFirst(6)))?.count == 32)
            #expect(try await store.webhookSecret(tenant: "globex") != acme)
            #expect(try await store.webhookSecret(tenant: "acme") == acme)
        }
    }

    @Test("enqueue signals waiting workers", arguments: StoreKind.allCases)
    func signals(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let recorder = SignalRecorder(store)
            try await store.add(queue: "wake")
            #expect(await eventually { recorder.contains(.workAvailable(queue: "wake")) })
        }
    }

    @Test("concurrent completions of one job under a stale and the current lease: only the current one counts", arguments: StoreKind.allCases)
    func staleAndCurrentCompletion(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let id = try await store.add().job.id
            let stale = try #require(try await store.leaseAll(lease: .milliseconds(1)).first)
            try await Task.sleep(for: .milliseconds(20))
            #expect(try await store.rescueExpiredLeases() == 1)
            let current = try #require(try await store.leaseAll().first)
            #expect(current.id == id && current.lease != stale.lease)
            // Submitted together, so that a store batching completions gets both in one batch.
            func complete(_ lease: LeaseToken, _ from: String) async -> Result<Void, any Error> {
                do { return .success(try await store.complete(id, lease: lease, result: Data(#"{"from":"\#(from)"}"#.utf8))) } catch { return .failure(error) }
            }
            async let old = complete(stale.lease, "stale")
            async let new = complete(current.lease, "current")
            let outcomes = await [old, new]
            if case .failure(SpoolError.leaseLost) = outcomes[0] {} else { Issue.record("the stale completion was answered \(outcomes[0])") }
            if case .failure(let error) = outcomes[1] { Issue.record("the current completion failed: \(error)") }
            let job = try await store.mustGet(id)
            #expect(job.state == .completed && job.result.flatMap { JSONValue(json: $0) } == JSONValue(json: Data(#"{"from":"current"}"#.utf8)))
        }
    }

    @Test("every state change is a stored event, in order, with the attempt and the result", arguments: StoreKind.allCases)
    func stateEvents(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let before = try await store.lastEventSeq()
            let id = try await store.add().job.id
            let other = try await store.add().job.id
            let due = try await store.add(runAt: Date().addingTimeInterval(0.2)).job.id
            let leased = try await store.leaseAll(limit: 1)
            #expect(leased.map(\.id) == [id])
            try await store.complete(id, lease: leased[0].lease, result: Data(#"{"n": 1, "s": "a\"b"}"#.utf8))

            let events = try await store.events(after: before, filter: EventFilter(jobIDs: [id]), limit: 100)
            #expect(events.map(\.type) == [.state, .state, .state])
            #expect(events.map(\.state) == [.pending, .processing, .completed])
            #expect(events.map(\.attempt) == [0, 1, 1])
            #expect(events.allSatisfy { $0.jobID == id && $0.queue == "q" && $0.kind == "k" && $0.tenant == NewJob.defaultTenant })
            #expect(zip(events, events.dropFirst()).allSatisfy { $0.seq < $1.seq })
            let result = try #require(events.last?.result)
            #expect(JSONValue(json: result) == JSONValue(json: Data(#"{"n":1,"s":"a\"b"}"#.utf8)))
            #expect(events.dropLast().allSatisfy { $0.result == nil })

            // A scheduled job coming due is announced as pending when a lease promotes it.
            try await Task.sleep(for: .milliseconds(300))
            let next = try await store.leaseAll(limit: 10)
            #expect(Set(next.map(\.id)) == [other, due])
            let dueEvents = try await store.events(after: before, filter: EventFilter(jobIDs: [due]), limit: 100)
            #expect(Array(dueEvents.map(\.state).prefix(2)) == [.scheduled, .pending])
            // The queue filter sees all three jobs; another queue's filter none.
            let all = try await store.events(after: before, filter: EventFilter(queues: ["q"]), limit: 100)
            #expect(Set(all.map(\.jobID)) == [id, other, due])
            #expect(try await store.events(after: before, filter: EventFilter(queues: ["elsewhere"]), limit: 100).isEmpty)
        }
    }
}

/// Records the signals a store raises.
final class SignalRecorder: Sendable {
    private let seen = Mutex<[StoreSignals.Signal]>([])
    init(_ store: any JobStore) {
        store.signals.addListener { [weak self] signal in self?.seen.withLock { $0.append(signal) } }
    }
    func contains(_ s: StoreSignals.Signal) -> Bool { seen.withLock { $0.contains(s) } }
}
