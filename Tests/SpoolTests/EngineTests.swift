import Dispatch
import Foundation
import SpoolCore
import SpoolDemoJobs
import SpoolSQLite
import Synchronization
import Testing

/// Engine settings that make the tests quick: short leases, fast polls, tiny backoff.
func fastConfiguration(_ tweak: (inout EngineConfiguration) -> Void = { _ in }) -> EngineConfiguration {
    var config = EngineConfiguration()
    config.leaseDuration = .seconds(2)
    config.heartbeatInterval = .milliseconds(300)
    config.maintenanceInterval = .milliseconds(100)
    config.pollInterval = .milliseconds(100)
    config.shutdownGracePeriod = .seconds(2)
    config.defaultQueue = QueueConfiguration(concurrency: 4, timeout: .seconds(30), maxAttempts: 3,
                                             backoff: Backoff(initial: .milliseconds(100), multiplier: 2, max: .seconds(1), jitter: 0))
    tweak(&config)
    return config
}

/// Runs `body` with a Spool engine on a fresh SQLite store, and its workers running.
func withEngine(
    on kind: StoreKind = .sqlite, _ configuration: EngineConfiguration = fastConfiguration(), queues: [String]? = nil,
    register: (Spool) -> Void = { DemoJobs.register(on: $0) },
    _ body: (Spool, SpoolWorker) async throws -> Void
) async throws {
    try await withStore(kind) { store in
        let spool = Spool(store: store, configuration: configuration)
        register(spool)
        let worker = spool.worker(queues: queues)
        let running = Task { try await worker.run() }
        do {
            try await body(spool, worker)
        } catch {
            worker.stop()
            _ = try? await running.value
            throw error
        }
        worker.stop()
        try await running.value
    }
}

/// A gate a test opens to let handlers go on; waiting ignores task cancellation on purpose.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
    func open() {
        let waiters = state.withLock { s in s.open = true; defer { s.waiters = [] }; return s.waiters }
        waiters.forEach { $0.resume() }
    }
    func wait() async {
        await withCheckedContinuation { c in
            let now = state.withLock { s in
                if s.open { return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }
}

/// A thread-safe log of events for handlers to write and tests to read.
final class Recorder<T: Sendable>: Sendable {
    private let items = Mutex<[T]>([])
    func append(_ item: T) { items.withLock { $0.append(item) } }
    var all: [T] { items.withLock { $0 } }
    var count: Int { items.withLock { $0.count } }
}

struct Empty: Codable, Sendable {}

@Suite("Engine")
struct EngineTests {
    @Test("a flaky job retries with backoff and completes", arguments: StoreKind.allCases)
    func retriesThenCompletes(kind: StoreKind) async throws {
        try await withEngine(on: kind) { spool, _ in
            let job = try await spool.enqueue(DemoFlaky.self, DemoFlaky.Payload(fail_times: 2))
            let done = try await spool.waitUntilFinished(job.id)
            #expect(done.state == .completed && done.attempt == 3)
            #expect(done.errors.map(\.attempt) == [1, 2])
            #expect(JSONValue(json: try #require(done.result)) == .object(["succeeded_on_attempt": .number(3)]))
        }
    }

    @Test("retries with exponential backoff end in failed with every error kept", arguments: StoreKind.allCases)
    func retriesExhausted(kind: StoreKind) async throws {
        try await withEngine(on: kind) { spool, _ in
            let job = try await spool.enqueue(DemoFlaky.self, DemoFlaky.Payload(always: true), maxAttempts: 4)
            let done = try await spool.waitUntilFinished(job.id)
            #expect(done.state == .failed && done.attempt == 4 && done.finishedAt != nil)
            #expect(done.errors.map(\.attempt) == [1, 2, 3, 4])
            #expect(done.errors.allSatisfy { $0.reason == "error" && $0.message.contains("failed on purpose") })
            // Backoff 100 ms, 200 ms, 400 ms (no jitter): the gaps between failures grow.
            let times = done.errors.map(\.at)
            let gaps = zip(times.dropFirst(), times).map { $0.timeIntervalSince($1) }
            #expect(gaps[0] >= 0.09 && gaps[1] >= 0.19 && gaps[2] >= 0.39)
        }
    }

    @Test("backoff grows exponentially, is capped, and jitters within bounds")
    func backoffShape() {
        let b = Backoff(initial: .seconds(1), multiplier: 2, max: .seconds(10), jitter: 0.2)
        var rng = SystemRandomNumberGenerator()
        for (failures, base) in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (9, 10.0)] {
            for _ in 0..<50 {
                let d = b.delay(afterFailures: failures, using: &rng).seconds
                #expect(d >= base * 0.8 - 1e-9 && d <= base * 1.2 + 1e-9)
            }
        }
        #expect(Backoff.none.delay(afterFailures: 3) == .zero)
    }

    @Test("a non-retryable error fails the job at once", arguments: StoreKind.allCases)
    func nonRetryable(kind: StoreKind) async throws {
        try await withEngine(on: kind) { spool, _ in
            let job = try await spool.enqueue(DemoFlaky.self, DemoFlaky.Payload(always: true, permanent: true), maxAttempts: 5)
            let done = try await spool.waitUntilFinished(job.id)
            #expect(done.state == .failed && done.attempt == 1)
            #expect(done.errors.map(\.reason) == ["non_retryable"])
        }
    }

    @Test("a payload the handler cannot decode is not retried", arguments: StoreKind.allCases)
    func badPayload(kind: StoreKind) async throws {
        try await withEngine(on: kind) { spool, _ in
            let job = try await spool.enqueue(NewJob(kind: DemoSleep.kind, payload: Data(#"{"seconds":"soon"}"#.utf8))).job
            let done = try await spool.waitUntilFinished(job.id)
            #expect(done.state == .failed && done.attempt == 1 && done.errors.first?.reason == "non_retryable")
            #expect(done.errors.first?.worker == spool.configuration.workerID && done.workerID == spool.configuration.workerID)
        }
    }

    @Test("workers lease only the kinds they have handlers for; a job of another kind waits for its worker", arguments: StoreKind.allCases)
    func unknownKindWaits(kind: StoreKind) async throws {
        try await withEngine(on: kind) { spool, _ in
            let store = spool.store
            let foreign = try await spool.enqueue(NewJob(kind: "nobody.handles.this", maxAttempts: 1)).job
            let known = try await spool.enqueue(NewJob(kind: DemoSleep.kind, payload: Data(#"{"seconds":0}"#.utf8))).job
            #expect(try await spool.waitUntilFinished(known.id).state == .completed)
            // The known job behind it ran; the foreign one was never leased here.
            let waiting = try #require(try await store.job(foreign.id, tenant: nil))
            #expect(waiting.state == .pending && waiting.attempt == 0)
            // A worker that names the kind gets it.
            let batch = try await store.lease(LeaseRequest(queue: "default", limit: 10, workerID: "remote", leaseDuration: .seconds(30),
                                                           kinds: ["nobody.handles.this"]))
            #expect(batch.jobs.map(\.job.id) == [foreign.id])
        }
    }

    @Test("an attempt past its timeout is stopped and counts as failed, even if the handler ignores cancellation", arguments: StoreKind.allCases)
    func timeout(kind: StoreKind) async throws {
        let sawCancellation = Recorder<Bool>()
        try await withEngine(on: kind, register: { spool in
            spool.register(kind: "stubborn", payload: Empty.self) { _, _ in
                // Ignores cancellation: resumes only after 20 s.
                await withCheckedContinuation { c in DispatchQueue.global().asyncAfter(deadline: .now() + 20) { c.resume() } }
            }
            spool.register(kind: "polite", payload: Empty.self) { _, _ in
                do { try await Task.sleep(for: .seconds(5)) } catch { sawCancellation.append(true); throw error }
            }
        }) { spool, _ in
            let started = ContinuousClock.now
            let stubborn = try await spool.enqueue(NewJob(kind: "stubborn", maxAttempts: 2, timeout: .milliseconds(300))).job
            let polite = try await spool.enqueue(NewJob(kind: "polite", maxAttempts: 1, timeout: .milliseconds(300))).job
            let a = try await spool.waitUntilFinished(stubborn.id)
            let b = try await spool.waitUntilFinished(polite.id)
            #expect(ContinuousClock.now - started < .seconds(10))  // the stubborn handler would hold it 20 s
            #expect(a.state == .failed && a.attempt == 2 && a.errors.map(\.reason) == ["timeout", "timeout"])
            #expect(b.state == .failed && b.errors.map(\.reason) == ["timeout"])
            #expect(sawCancellation.count == 1)
        }
    }

    @Test("cancelling a pending job: it never runs", arguments: StoreKind.allCases)
    func cancelPending(kind: StoreKind) async throws {
        let ran = Recorder<JobID>()
        try await withEngine(on: kind, register: { $0.register(kind: "record", payload: Empty.self) { _, ctx in ran.append(ctx.id) } }) { spool, _ in
            try await spool.pause(queue: "default")
            let job = try await spool.enqueue(NewJob(kind: "record")).job
            let cancelled = try await spool.cancel(job.id)
            #expect(cancelled.state == .cancelled)
            try await spool.resume(queue: "default")
            let other = try await spool.enqueue(NewJob(kind: "record")).job
            _ = try await spool.waitUntilFinished(other.id)
            #expect(ran.all == [other.id])
            #expect(try await spool.job(job.id)?.state == .cancelled)
        }
    }

    @Test("cancelling a running job cancels its handler and nothing completes it", arguments: StoreKind.allCases)
    func cancelRunning(kind: StoreKind) async throws {
        let started = Recorder<JobID>()
        let cancelled = Recorder<JobID>()
        try await withEngine(on: kind, register: { spool in
            spool.register(kind: "long", payload: Empty.self) { _, ctx in
                started.append(ctx.id)
                do { try await Task.sleep(for: .seconds(10)) } catch { cancelled.append(ctx.id); throw error }
            }
        }) { spool, worker in
            let job = try await spool.enqueue(NewJob(kind: "long")).job
            #expect(await eventually { started.count == 1 })
            let after = try await spool.cancel(job.id)
            #expect(after.state == .cancelled)
            #expect(await eventually { cancelled.all == [job.id] })
            #expect(await eventually { worker.runningCount == 0 })
            let final = try await spool.job(job.id)
            #expect(final?.state == .cancelled && final?.errors.isEmpty == true)
        }
    }

    @Test("a worker that stops heartbeating loses its job to another; its late completion is rejected", arguments: StoreKind.allCases)
    func stalledWorkerLosesLease(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let gate = Gate()
            let runs = Recorder<String>()
            // Worker A: leases for 500 ms and never heartbeats (a stalled handler). Whichever
            // process leads maintenance (on PostgreSQL, the first) rescues the expired lease.
            let a = Spool(store: store, configuration: fastConfiguration {
                $0.leaseDuration = .milliseconds(500)
                $0.heartbeatInterval = .seconds(3600)
                $0.defaultQueue.concurrency = 1
            })
            a.register(kind: "work", payload: Empty.self) { _, _ in
                runs.append("A started")
                await gate.wait()
                runs.append("A finished")
            }
            let workerA = a.worker(queues: ["default"])
            let taskA = Task { try await workerA.run() }
            let job = try await a.enqueue(NewJob(kind: "work")).job
            #expect(await eventually { runs.all == ["A started"] })

            // Worker B: healthy; it runs the rescued job.
            let b = Spool(store: store, configuration: fastConfiguration())
            b.register(AnyJobHandler(kind: "work") { _, _ in runs.append("B ran"); return Data(#""from B""#.utf8) })
            let workerB = b.worker(queues: ["default"])
            let taskB = Task { try await workerB.run() }
            let done = try await b.waitUntilFinished(job.id)
            #expect(done.state == .completed && done.attempt == 2)
            #expect(done.errors.map(\.reason) == ["lease_expired"])

            // A wakes up and tries to complete: rejected, the result stays B's.
            gate.open()
            #expect(await eventually { runs.all.contains("A finished") && workerA.runningCount == 0 })
            let final = try #require(try await store.job(job.id, tenant: nil))
            #expect(final.state == .completed && final.result == Data(#""from B""#.utf8))
            #expect(runs.all == ["A started", "B ran", "A finished"])
            workerA.stop(); workerB.stop()
            try await taskA.value; try await taskB.value
        }
    }

    @Test("50 concurrent enqueues with one idempotency key through the engine make one job", arguments: StoreKind.allCases)
    func idempotencyThroughEngine(kind: StoreKind) async throws {
        try await withEngine(on: kind, queues: []) { spool, _ in
            let ids = try await withThrowingTaskGroup(of: JobID.self) { group in
                for _ in 0..<50 {
                    group.addTask { try await spool.enqueue(NewJob(kind: "demo.noop", idempotencyKey: "one")).job.id }
                }
                return try await group.reduce(into: Set<JobID>()) { $0.insert($1) }
            }
            #expect(ids.count == 1)
            #expect(try await spool.list(JobFilter(limit: 100)).jobs.count == 1)
        }
    }

    @Test("a full queue refuses enqueues with a typed error", arguments: StoreKind.allCases)
    func depthLimit(kind: StoreKind) async throws {
        let config = fastConfiguration { $0.queues["tiny"] = QueueConfiguration(depthLimit: 2) }
        try await withEngine(on: kind, config, queues: []) { spool, _ in
            try await spool.enqueue(NewJob(queue: "tiny", kind: "demo.noop"))
            try await spool.enqueue(NewJob(queue: "tiny", kind: "demo.noop"))
            await expectSpoolError({ if case .queueFull("tiny", 2, let after) = $0 { after > .zero } else { false } }) {
                try await spool.enqueue(NewJob(queue: "tiny", kind: "demo.noop"))
            }
            #expect(try await spool.list(JobFilter(queue: "tiny", limit: 10)).jobs.count == 2)
        }
    }

    @Test("invalid requests are refused before anything is written", arguments: StoreKind.allCases)
    func validation(kind: StoreKind) async throws {
        try await withEngine(on: kind, queues: []) { spool, _ in
            let bad: [(NewJob, String)] = [
                (NewJob(queue: "", kind: "k"), "queue"),
                (NewJob(queue: "has space", kind: "k"), "queue"),
                (NewJob(kind: ""), "kind"),
                (NewJob(kind: "k", priority: 5000), "priority"),
                (NewJob(kind: "k", maxAttempts: 0), "max_attempts"),
                (NewJob(kind: "k", timeout: .zero), "timeout_seconds"),
                (NewJob(kind: "k", payload: Data("{not json".utf8)), "payload"),
                (NewJob(kind: "k", callbackURL: "ftp://x"), "callback_url"),
                (NewJob(kind: "k", idempotencyKey: ""), "idempotency_key"),
            ]
            for (job, field) in bad {
                await expectSpoolError({ if case .invalid(field, _) = $0 { true } else { false } }) { try await spool.enqueue(job) }
            }
            let written = try await spool.list(JobFilter(limit: 10)).jobs
            #expect(written.isEmpty)
        }
    }

    @Test("a paused queue runs nothing until resumed", arguments: StoreKind.allCases)
    func pauseResume(kind: StoreKind) async throws {
        try await withEngine(on: kind) { spool, _ in
            try await spool.pause(queue: "default")
            let job = try await spool.enqueue(NewJob(kind: "demo.noop")).job
            try await Task.sleep(for: .milliseconds(400))
            #expect(try await spool.job(job.id)?.state == .pending)
            try await spool.resume(queue: "default")
            #expect(try await spool.waitUntilFinished(job.id, timeout: .seconds(5)).state == .completed)
        }
    }

    @Test("priorities, FIFO and delayed jobs run in order", arguments: StoreKind.allCases)
    func priorityAndDelayOrder(kind: StoreKind) async throws {
        let order = Recorder<(String, Date)>()
        struct Named: Codable, Sendable { var name: String }
        var config = fastConfiguration()
        config.defaultQueue.concurrency = 1
        try await withEngine(on: kind, config, register: { spool in
            spool.register(kind: "named", payload: Named.self) { p, _ in order.append((p.name, Date())) }
        }) { spool, _ in
            try await spool.pause(queue: "default")
            let delayedUntil = Date().addingTimeInterval(5)  // room for a loaded machine (the suites run in parallel)
            let jobs: [(String, Int, Date?)] = [("a", 0, nil), ("b", 5, nil), ("late", 100, delayedUntil), ("c", 0, nil), ("d", 10, nil)]
            for (name, priority, runAt) in jobs {
                try await spool.enqueue(try NewJob(kind: "named", payload: Named(name: name), priority: priority, runAt: runAt))
            }
            try await spool.resume(queue: "default")
            #expect(await eventually { order.count == 5 })
            #expect(order.all.map(\.0) == ["d", "b", "a", "c", "late"])
            let lateRan = try #require(order.all.last?.1)
            #expect(lateRan >= delayedUntil.addingTimeInterval(-0.002))
            #expect(lateRan.timeIntervalSince(delayedUntil) < 4)  // promptly, not at some later poll
        }
    }

    @Test("handlers report progress and results", arguments: StoreKind.allCases)
    func progressAndResult(kind: StoreKind) async throws {
        try await withEngine(on: kind) { spool, _ in
            let job = try await spool.enqueue(DemoSleep.self, DemoSleep.Payload(seconds: 0.2, steps: 4))
            let done = try await spool.waitUntilFinished(job.id)
            #expect(done.state == .completed)
            #expect(done.progress == JobProgress(percent: 100, message: "step 4 of 4"))
            guard case .object(let result)? = JSONValue(json: try #require(done.result)) else { Issue.record("no result object"); return }
            #expect(result["slept_seconds"] == .number(0.2) && result["attempt"]?.doubleValue == 1)
        }
    }

    @Test("finished jobs are pruned after their retention", arguments: StoreKind.allCases)
    func pruning(kind: StoreKind) async throws {
        let config = fastConfiguration {
            $0.completedRetention = .milliseconds(200)
            $0.failedRetention = nil
            $0.pruneInterval = .milliseconds(100)
        }
        try await withEngine(on: kind, config) { spool, _ in
            let ok = try await spool.enqueue(NewJob(kind: "demo.noop")).job
            let bad = try await spool.enqueue(DemoFlaky.self, DemoFlaky.Payload(always: true, permanent: true))
            #expect(try await spool.waitUntilFinished(ok.id).state == .completed)
            #expect(try await spool.waitUntilFinished(bad.id).state == .failed)
            #expect(await eventually { (try? await spool.job(ok.id)) == nil })
            #expect(try await spool.job(bad.id)?.state == .failed)  // dead letters kept (no retention)
        }
    }

    @Test("graceful shutdown lets short jobs finish and gives long ones back at once", arguments: StoreKind.allCases)
    func gracefulShutdown(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let spool = Spool(store: store, configuration: fastConfiguration { $0.shutdownGracePeriod = .milliseconds(500) })
            DemoJobs.register(on: spool)
            let short = try await spool.enqueue(DemoSleep.self, DemoSleep.Payload(seconds: 0.2, steps: 1))
            let long = try await spool.enqueue(DemoSleep.self, DemoSleep.Payload(seconds: 30, steps: 30))
            let worker = spool.worker()
            let task = Task { try await worker.run() }
            #expect(await eventually { worker.runningCount == 2 })
            let stopAt = ContinuousClock.now
            worker.stop()
            try await task.value
            #expect(ContinuousClock.now - stopAt < .seconds(10))  // the grace period, not the 30 s job
            #expect(try await spool.job(short.id)?.state == .completed)
            let givenBack = try #require(try await spool.job(long.id))
            #expect(givenBack.state == .pending && givenBack.attempt == 0 && givenBack.errors.isEmpty)
        }
    }
}

/// A store whose completions wait at a gate (a database that has fallen behind), counting the
/// jobs it leased and completed.
final class GatedCompletions: JobStore {
    let base: any JobStore
    let gate = Gate()
    private let counts = Mutex<(leased: Int, completed: Int)>((0, 0))
    init(_ base: any JobStore) { self.base = base }
    var leased: Int { counts.withLock { $0.leased } }
    var completed: Int { counts.withLock { $0.completed } }

    var signals: StoreSignals { base.signals }
    func migrate() async throws { try await base.migrate() }
    func enqueue(_ jobs: [NewJob], defaults: [String: JobDefaults], depthLimits: [String: Int]) async throws -> [EnqueueResult] {
        try await base.enqueue(jobs, defaults: defaults, depthLimits: depthLimits)
    }
    func lease(_ request: LeaseRequest) async throws -> LeaseBatch {
        let batch = try await base.lease(request)
        counts.withLock { $0.leased += batch.jobs.count }
        return batch
    }
    func heartbeat(_ leases: [(JobID, LeaseToken)], leaseDuration: Duration) async throws -> Set<JobID> {
        try await base.heartbeat(leases, leaseDuration: leaseDuration)
    }
    func reportProgress(_ id: JobID, lease: LeaseToken, progress: JobProgress) async throws {
        try await base.reportProgress(id, lease: lease, progress: progress)
    }
    func complete(_ id: JobID, lease: LeaseToken, result: Data?) async throws {
        await gate.wait()
        try await base.complete(id, lease: lease, result: result)
        counts.withLock { $0.completed += 1 }
    }
    func fail(_ id: JobID, lease: LeaseToken, error: AttemptError, retryAt: Date?) async throws {
        try await base.fail(id, lease: lease, error: error, retryAt: retryAt)
    }
    func release(_ id: JobID, lease: LeaseToken) async throws { try await base.release(id, lease: lease) }
    func cancel(_ id: JobID, tenant: String?) async throws -> Job { try await base.cancel(id, tenant: tenant) }
    func retry(_ id: JobID, tenant: String?, attempts: Int?) async throws -> Job { try await base.retry(id, tenant: tenant, attempts: attempts) }
    func delete(_ id: JobID, tenant: String?) async throws { try await base.delete(id, tenant: tenant) }
    func job(_ id: JobID, tenant: String?) async throws -> Job? { try await base.job(id, tenant: tenant) }
    func list(_ filter: JobFilter) async throws -> JobPage { try await base.list(filter) }
    func rescueExpiredLeases() async throws -> Int { try await base.rescueExpiredLeases() }
    func prune(completedBefore: Date?, failedBefore: Date?, limit: Int) async throws -> Int {
        try await base.prune(completedBefore: completedBefore, failedBefore: failedBefore, limit: limit)
    }
    func setPaused(_ paused: Bool, queue: String) async throws { try await base.setPaused(paused, queue: queue) }
    func queueStats(tenant: String?) async throws -> [QueueStats] { try await base.queueStats(tenant: tenant) }
    func retryFailed(queue: String, tenant: String?, attempts: Int?) async throws -> Int { try await base.retryFailed(queue: queue, tenant: tenant, attempts: attempts) }
    func purge(queue: String, tenant: String?) async throws -> Int { try await base.purge(queue: queue, tenant: tenant) }
    func eventPage(after: Int64, filter: EventFilter, limit: Int) async throws -> EventPage {
        try await base.eventPage(after: after, filter: filter, limit: limit)
    }
    func prunedEventSeq() async throws -> Int64 { try await base.prunedEventSeq() }
    func lastEventSeq() async throws -> Int64 { try await base.lastEventSeq() }
    func pruneEvents(before: Date, limit: Int) async throws -> Int { try await base.pruneEvents(before: before, limit: limit) }
    func webhookDeliveries(of job: JobID, tenant: String?) async throws -> [WebhookDelivery] {
        try await base.webhookDeliveries(of: job, tenant: tenant)
    }
    func recordWebhookAttempt(_ attempt: WebhookAttempt, delivery: JobID) async throws {
        try await base.recordWebhookAttempt(attempt, delivery: delivery)
    }
    func recordWorker(_ worker: WorkerInfo) async throws { try await base.recordWorker(worker) }
    func workers(tenant: String?) async throws -> [WorkerInfo] { try await base.workers(tenant: tenant) }
    func removeWorker(id: String) async throws { try await base.removeWorker(id: id) }
    func pruneWorkers(expiredBefore: Date) async throws -> Int { try await base.pruneWorkers(expiredBefore: expiredBefore) }
    func recordQueueMinutes(_ rows: [QueueMinute], writer: String, batch: String) async throws {
        try await base.recordQueueMinutes(rows, writer: writer, batch: batch)
    }
    func queueMinutes(from: Int64, to: Int64, tenant: String?, queue: String?) async throws -> [QueueMinute] {
        try await base.queueMinutes(from: from, to: to, tenant: tenant, queue: queue)
    }
    func pruneQueueMinutes(before minute: Int64) async throws -> Int { try await base.pruneQueueMinutes(before: minute) }
    func webhookSecret(tenant: String) async throws -> String { try await base.webhookSecret(tenant: tenant) }
    func createBatch(_ batch: NewBatch, jobs: [NewJob], defaults: [String: JobDefaults], depthLimits: [String: Int]) async throws -> (Batch, [EnqueueResult]) {
        try await base.createBatch(batch, jobs: jobs, defaults: defaults, depthLimits: depthLimits)
    }
    func batch(_ id: JobID, tenant: String?) async throws -> Batch? { try await base.batch(id, tenant: tenant) }
    func closeBatch(_ id: JobID, tenant: String?) async throws -> Batch { try await base.closeBatch(id, tenant: tenant) }
    func cancelBatch(_ id: JobID, tenant: String?) async throws -> Batch { try await base.cancelBatch(id, tenant: tenant) }
    func saveSubscription(_ subscription: TopicSubscription) async throws { try await base.saveSubscription(subscription) }
    func removeSubscription(tenant: String, topic: String, name: String) async throws -> Bool {
        try await base.removeSubscription(tenant: tenant, topic: topic, name: name)
    }
    func subscriptions(tenant: String?, topic: String?) async throws -> [TopicSubscription] { try await base.subscriptions(tenant: tenant, topic: topic) }
    func publish(_ event: TopicEvent, jobs: [NewJob], subscribers: [String], defaults: [String: JobDefaults], depthLimits: [String: Int]) async throws -> PublishResult {
        try await base.publish(event, jobs: jobs, subscribers: subscribers, defaults: defaults, depthLimits: depthLimits)
    }
    func topicEvents(tenant: String, topic: String, since: Date, limit: Int) async throws -> [TopicEvent] {
        try await base.topicEvents(tenant: tenant, topic: topic, since: since, limit: limit)
    }
    func topicSummaries(tenant: String?) async throws -> [TopicSummary] { try await base.topicSummaries(tenant: tenant) }
    func close() async throws { try await base.close() }
}

@Suite("Engine back-pressure")
struct EngineBackPressureTests {
    @Test("when completions fall behind, a worker holds at most twice its concurrency in leases, and loses nothing", arguments: StoreKind.allCases)
    func leasesAreCapped(kind: StoreKind) async throws {
        try await withStore(kind) { sqlite in
            let store = GatedCompletions(sqlite)
            let spool = Spool(store: store, configuration: fastConfiguration {
                $0.defaultQueue.concurrency = 5
                $0.leaseDuration = .seconds(60)  // the gate holds completions; leases must not expire meanwhile
            })
            DemoJobs.register(on: spool)
            let jobs = try await spool.enqueue((0..<50).map { _ in NewJob(kind: "demo.noop") }).map(\.job.id)
            let worker = spool.worker()
            let task = Task { try await worker.run() }
            // The handlers finish at once; their completions wait at the gate.
            #expect(await eventually { store.leased >= 10 })
            try await Task.sleep(for: .milliseconds(500))  // several poll intervals: would it lease more?
            #expect(store.leased == 10, "leased \(store.leased) jobs with concurrency 5")
            #expect(store.completed == 0)
            store.gate.open()
            #expect(await eventually(timeout: .seconds(20)) { store.completed == 50 })
            worker.stop()
            try await task.value
            for id in jobs { #expect(try await spool.job(id)?.state == .completed) }
        }
    }
}
