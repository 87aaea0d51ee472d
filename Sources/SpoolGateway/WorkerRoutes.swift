import Foundation
import Hummingbird
import SpoolCore
import Synchronization

/// `/v1/worker/...`: the worker protocol, for workers in any language. A remote worker leases
/// jobs (long poll), heartbeats its leases, reports progress and finishes each job with the
/// lease token it got: the same leases and fencing as a worker inside the process. Every call
/// needs the `worker` scope. A lease hands out the token's tenant's jobs only (admins: every
/// tenant's); the calls after it are bound by the lease token, a random secret that only the
/// worker that leased the job received.
struct WorkerRoutes {
    let gateway: Gateway
    var spool: Spool { gateway.spool }
    var store: any JobStore { gateway.spool.store }

    /// The most leases, completions or failures in one call.
    static let maxItems = 1000
    /// The longest a lease call may wait for work.
    static let maxWait: Double = 60

    func register(on api: RouterGroup<SpoolRequestContext>) {
        api.post("worker/lease", use: lease)
        api.post("worker/heartbeat", use: heartbeat)
        api.post("worker/complete", use: completeMany)
        api.post("worker/fail", use: failMany)
        api.post("worker/jobs/:id/complete") { request, context in try await complete(request, context, scoped: true) }
        api.post("worker/jobs/:id/fail") { request, context in try await fail(request, context, scoped: true) }
        api.post("worker/jobs/:id/progress") { request, context in try await progress(request, context, scoped: true) }
        api.post("worker/jobs/:id/release", use: release)
    }

    /// `/v1/service/jobs/{id}/...`: the reports of a service kind's service that answered
    /// `202 Accepted`. They carry no API token: the attempt's lease token, which only that
    /// service received (in a signed request), is the proof. Same bodies as the worker calls.
    func registerServiceCallbacks(on v1: RouterGroup<SpoolRequestContext>) {
        v1.post("service/jobs/:id/complete") { request, context in
            try await serviceJob(context)
            return try await complete(request, context, scoped: false)
        }
        v1.post("service/jobs/:id/fail") { request, context in
            try await serviceJob(context)
            return try await fail(request, context, scoped: false)
        }
        v1.post("service/jobs/:id/progress") { request, context in
            try await serviceJob(context)
            return try await progress(request, context, scoped: false)
        }
    }

    /// Only jobs of HTTP service kinds take reports without an API token (a remote worker's
    /// lease token alone does not do: its calls need the `worker` scope). Anything else reads
    /// as a lost lease, like a wrong token, so the answer tells nothing about other jobs.
    private func serviceJob(_ context: SpoolRequestContext) async throws {
        let id = try context.jobIDParameter()
        guard let job = try await store.job(id, tenant: nil), spool.configuration.admission.declaredKinds[job.kind] == "http" else {
            throw SpoolError.leaseLost(id)
        }
    }

    // MARK: Lease

    struct LeaseBody: Decodable {
        var worker_id: String
        var queues: [String]
        var kinds: [String]
        var max_jobs: Int?
        var wait_seconds: Double?
        /// For the worker registry (`GET /v1/workers`).
        var name: String?
        var host: String?
        var pid: Int?
        var version: String?
        var concurrency: Int?
    }

    /// One leased job: what the worker needs to run it and to report on it.
    struct LeasedJobDocument: Encodable {
        var id: String
        var tenant: String
        var queue: String
        var kind: String
        var payload: JSONValue
        var attempt: Int
        var max_attempts: Int
        var priority: Int
        var tags: [String]
        var idempotency_key: String?
        var timeout_seconds: Double
        /// When the attempt must have finished (now + timeout).
        var deadline: String
        var created_at: String
        var lease_token: String
        /// The job's parents and their results (absent when it has none).
        var parents: [ParentDocument]?
        var batch_id: String?

        init(_ leased: LeasedJob, now: Date) {
            let job = leased.job
            id = job.id.description
            tenant = job.tenant; queue = job.queue; kind = job.kind
            payload = JSONValue(json: job.payload) ?? .null
            attempt = job.attempt; max_attempts = job.maxAttempts; priority = job.priority
            tags = job.tags; idempotency_key = job.idempotencyKey
            timeout_seconds = job.timeout.seconds
            deadline = Timestamp.format(now.addingTimeInterval(job.timeout.seconds))
            created_at = Timestamp.format(job.createdAt)
            lease_token = leased.lease.value
            parents = job.dependsOn.isEmpty ? nil : leased.parents.map(ParentDocument.init)
            batch_id = job.batchID?.description
        }
    }

    struct LeaseAnswer: Encodable {
        var jobs: [LeasedJobDocument]
        /// How long a lease lasts without a heartbeat.
        var lease_seconds: Double
        /// How often to heartbeat running jobs.
        var heartbeat_seconds: Double
    }

    /// Leases up to `max_jobs` jobs of the named kinds from the named queues, waiting up to
    /// `wait_seconds` for the first. An idle wait is woken by the signal that wakes workers
    /// inside the process (an enqueue here, or `NOTIFY` from another process).
    @Sendable func lease(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let principal = try context.require(.worker)
        let body = try await request.decodeJSON(LeaseBody.self, limit: gateway.configuration.maxBodyBytes)
        let workerID = body.worker_id
        try Self.label(workerID, field: "worker_id")
        for (field, value) in [("name", body.name), ("host", body.host), ("version", body.version)] {
            if let value { try Self.label(value, field: field) }
        }
        if let pid = body.pid, pid < 0 || pid > Int(Int32.max) { throw Problem.validation("pid", "must be 0 to 2147483647") }
        if let concurrency = body.concurrency, !(1...100_000).contains(concurrency) {
            throw Problem.validation("concurrency", "must be 1 to 100000")
        }
        let queues = try Self.names(body.queues, field: "queues", max: 100, length: 64)
        let kinds = try Self.names(body.kinds, field: "kinds", max: 1000, length: 128)
        let limit = body.max_jobs ?? 1
        guard (1...Self.maxItems).contains(limit) else { throw Problem.validation("max_jobs", "must be 1 to \(Self.maxItems)") }
        let wait = body.wait_seconds ?? 0
        guard wait.isFinite, (0...Self.maxWait).contains(wait) else { throw Problem.validation("wait_seconds", "must be 0 to \(Int(Self.maxWait))") }
        spool.announce(kinds: kinds, queues: queues)
        let config = spool.configuration
        let polledAt = Date()
        // In the registry until a lease duration after this poll ends without news.
        await record(principal, workerID) { old in
            WorkerInfo(id: workerID, tenant: principal.tenantFilter, name: body.name ?? old?.name ?? "remote worker",
                       host: body.host ?? old?.host, pid: body.pid ?? old?.pid, version: body.version ?? old?.version,
                       queues: queues, kinds: kinds, concurrency: body.concurrency ?? old?.concurrency ?? limit,
                       running: old?.running ?? 0, startedAt: polledAt, lastSeenAt: polledAt,
                       expiresAt: polledAt.addingTimeInterval(wait + config.leaseDuration.seconds))
        }

        let bell = Doorbell()
        let listener = store.signals.addListener { signal in
            switch signal {
            case .workAvailable(let queue), .queueResumed(let queue): if queues.contains(queue) { bell.ring() }
            case .jobCancelled: break
            }
        }
        defer { store.signals.removeListener(listener) }
        let deadline = ContinuousClock.now + .seconds(wait)
        var leased: [LeasedJob] = []
        while true {
            var nextRunAt: Date?
            for queue in queues where leased.count < limit {
                let batch: LeaseBatch
                do {
                    batch = try await store.lease(LeaseRequest(
                        queue: queue, limit: limit - leased.count, workerID: workerID, leaseDuration: config.leaseDuration,
                        kinds: kinds, tenant: principal.tenantFilter))
                } catch {
                    if leased.isEmpty { throw error }
                    break  // what is leased already goes to the worker rather than waiting out its lease
                }
                leased += batch.jobs
                if let next = batch.nextRunAt { nextRunAt = min(nextRunAt ?? next, next) }
            }
            let now = ContinuousClock.now
            if !leased.isEmpty || now >= deadline || Task.isCancelled { break }
            // Until woken, the next scheduled job is due, or the poll interval (a missed wake-up
            // then costs at most that).
            var timeout = min(deadline - now, config.pollInterval)
            if let nextRunAt { timeout = min(timeout, .seconds(fractional: max(0.001, nextRunAt.timeIntervalSinceNow))) }
            await bell.wait(timeout: timeout)
        }
        let now = Date()
        gateway.remoteLeases.add(leased.map(\.job), until: now.addingTimeInterval(config.leaseDuration.seconds * 10))
        return try JSONResponse.make(LeaseAnswer(
            jobs: leased.map { LeasedJobDocument($0, now: now) },
            lease_seconds: config.leaseDuration.seconds, heartbeat_seconds: config.heartbeatInterval.seconds))
    }

    /// Refreshes the registry's entry of a remote worker (at most once a second per worker; a
    /// registry that cannot be written must not fail the worker's call).
    private func record(_ principal: Principal, _ workerID: String, _ make: (WorkerInfo?) -> WorkerInfo?) async {
        guard let info = gateway.remoteWorkers.update("\(principal.tenantFilter ?? "*")/\(workerID)", make) else { return }
        do { try await store.recordWorker(info) } catch {}
    }

    /// A name that goes into logs and records: 1 to 200 characters, no control characters.
    static func label(_ value: String, field: String) throws {
        guard !value.isEmpty, value.unicodeScalars.count <= 200,
              !value.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw Problem.validation(field, "must be 1 to 200 characters without control characters")
        }
    }

    /// Checks a list of queue or kind names.
    static func names(_ names: [String], field: String, max: Int, length: Int) throws -> [String] {
        guard !names.isEmpty, names.count <= max else { throw Problem.validation(field, "must name 1 to \(max)") }
        for name in names where !NewJob.isValidName(name, maxLength: length) {
            throw Problem.validation(field, "'\(name.prefix(64))' is not a valid name")
        }
        var seen = Set<String>()
        return names.filter { seen.insert($0).inserted }
    }

    /// A lease token as sent: 1 to 200 characters (a wrong one is a lost lease, not an error).
    static func token(_ text: String) throws -> LeaseToken {
        guard !text.isEmpty, text.unicodeScalars.count <= 200 else { throw Problem.validation("lease_token", "must be 1 to 200 characters") }
        return LeaseToken(text)
    }

    // MARK: Heartbeat and progress

    struct HeldLeaseBody: Decodable {
        var job_id: String
        var lease_token: String
    }

    struct HeartbeatBody: Decodable {
        var leases: [HeldLeaseBody]
        /// Refreshes this worker's registry entry (with the number of leases as jobs running).
        var worker_id: String?
        /// The worker is stopping for good: its registry entry goes (rather than showing it lost).
        var stopped: Bool?
    }

    /// Renews many leases at once; answers the ids whose lease is gone (stop those jobs).
    @Sendable func heartbeat(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let principal = try context.require(.worker)
        let body = try await request.decodeJSON(HeartbeatBody.self, limit: gateway.configuration.maxBodyBytes)
        guard body.leases.count <= Self.maxItems else { throw Problem.validation("leases", "at most \(Self.maxItems)") }
        if let workerID = body.worker_id, body.stopped == true {
            try Self.label(workerID, field: "worker_id")
            // Only the caller's own tenant's entry (admins: any). The registry failing must not
            // fail the heartbeat.
            if (try? await store.workers(tenant: principal.tenantFilter).contains(where: { $0.id == workerID })) == true {
                try? await store.removeWorker(id: workerID)
            }
            gateway.remoteWorkers.forget("\(principal.tenantFilter ?? "*")/\(workerID)")
        } else if let workerID = body.worker_id {
            try Self.label(workerID, field: "worker_id")
            let now = Date(), lease = spool.configuration.leaseDuration.seconds
            let key = "\(principal.tenantFilter ?? "*")/\(workerID)"
            if !gateway.remoteWorkers.knows(key), let entry = try? await store.workers(tenant: principal.tenantFilter).first(where: { $0.id == workerID }) {
                // A busy worker makes no lease calls: after a restart (or on another gateway) its
                // entry is found in the store, so that its heartbeats keep it active.
                gateway.remoteWorkers.seed(key, entry)
            }
            await record(principal, workerID) { old in
                guard var info = old else { return nil }  // known from its lease calls only
                info.running = body.leases.count
                info.lastSeenAt = now
                info.expiresAt = max(info.expiresAt, now.addingTimeInterval(lease))
                return info
            }
        }
        var leases: [(JobID, LeaseToken)] = []
        var lost: [String] = []
        for lease in body.leases {
            let token = try Self.token(lease.lease_token)
            // An id that is not one cannot be held: it is lost.
            if let id = JobID(lease.job_id.lowercased()) { leases.append((id, token)) } else { lost.append(lease.job_id) }
        }
        let gone = try await store.heartbeat(leases, leaseDuration: spool.configuration.leaseDuration)
        lost += leases.map(\.0).filter(gone.contains).map(\.description)
        return try JSONResponse.make(["lost": lost])
    }

    struct ProgressBody: Decodable {
        var lease_token: String
        var percent: Double
        var message: String?
    }

    func progress(_ request: Request, _ context: SpoolRequestContext, scoped: Bool) async throws -> Response {
        if scoped { _ = try context.require(.worker) }
        let id = try context.jobIDParameter()
        let body = try await request.decodeJSON(ProgressBody.self, limit: gateway.configuration.maxBodyBytes)
        guard body.percent.isFinite, (0...100).contains(body.percent) else { throw Problem.validation("percent", "must be 0 to 100") }
        if let message = body.message, message.unicodeScalars.count > 1000 { throw Problem.validation("message", "at most 1000 characters") }
        try await store.reportProgress(id, lease: try Self.token(body.lease_token), progress: JobProgress(percent: body.percent, message: body.message))
        return Response(status: .noContent)
    }

    // MARK: Outcomes

    /// What the batch forms take per job.
    protocol Item: Decodable, Sendable {
        var job_id: String? { get }
        /// Refuses what no job could take (the whole request is then refused: a malformed item
        /// is the caller's bug, a lost lease is not).
        func validate() throws
    }

    struct CompleteBody: Item {
        var job_id: String?
        var lease_token: String
        var result: JSONValue?
        func validate() throws { _ = try WorkerRoutes.token(lease_token) }
    }

    struct FailBody: Item {
        var job_id: String?
        var lease_token: String
        var error: String
        /// `false`: the job fails for good, whatever attempts are left.
        var retryable: Bool?
        /// Run the next attempt after this long instead of the queue's backoff.
        var retry_after_seconds: Double?
        /// The attempt ran past its timeout (recorded as such).
        var timed_out: Bool?
        func validate() throws {
            _ = try WorkerRoutes.token(lease_token)
            if let after = retry_after_seconds, !(after.isFinite && (0...86_400 * 366).contains(after)) {
                throw Problem.validation("retry_after_seconds", "must be 0 to a year")
            }
        }
    }

    struct ReleaseBody: Decodable {
        var lease_token: String
    }

    struct ManyBody<Item: Decodable>: Decodable {
        var jobs: [Item]
    }

    /// One item's answer in a batch: `completed`, `retried`, `failed`, or the problem's type
    /// (`lease-lost`, `validation`, ...).
    struct ItemAnswer: Encodable {
        var job_id: String
        var status: String
        var retry_at: String?
        var detail: String?
    }

    func complete(_ request: Request, _ context: SpoolRequestContext, scoped: Bool) async throws -> Response {
        if scoped { _ = try context.require(.worker) }
        let id = try context.jobIDParameter()
        let body = try await request.decodeJSON(CompleteBody.self, limit: gateway.configuration.maxBodyBytes)
        try await complete(id, body)
        return Response(status: .noContent)
    }

    func fail(_ request: Request, _ context: SpoolRequestContext, scoped: Bool) async throws -> Response {
        // (A service's report is bound to its job by the lease token alone.)
        let tenant = scoped ? try context.require(.worker).tenantFilter : nil
        let id = try context.jobIDParameter()
        let body = try await request.decodeJSON(FailBody.self, limit: gateway.configuration.maxBodyBytes)
        let retryAt = try await fail(id, body, tenant: tenant)
        return try JSONResponse.make(ItemAnswer(job_id: id.description, status: retryAt == nil ? "failed" : "retried",
                                                retry_at: retryAt.map(Timestamp.format)))
    }

    /// Gives a job back to its queue without counting the attempt (a worker shutting down).
    @Sendable func release(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        _ = try context.require(.worker)
        let id = try context.jobIDParameter()
        let body = try await request.decodeJSON(ReleaseBody.self, limit: gateway.configuration.maxBodyBytes)
        try await store.release(id, lease: try Self.token(body.lease_token))
        _ = gateway.remoteLeases.take(id)
        return Response(status: .noContent)
    }

    /// Completes many jobs in one call. Each is answered on its own; they run together, so
    /// the store writes them in one group commit.
    @Sendable func completeMany(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        _ = try context.require(.worker)
        let body = try await request.decodeJSON(ManyBody<CompleteBody>.self, limit: gateway.configuration.maxBodyBytes)
        let answers = try await Self.each(body.jobs) { id, item in
            try await complete(id, item)
            return ItemAnswer(job_id: id.description, status: "completed")
        }
        return try JSONResponse.make(["results": answers])
    }

    @Sendable func failMany(_ request: Request, context: SpoolRequestContext) async throws -> Response {
        let principal = try context.require(.worker)
        let body = try await request.decodeJSON(ManyBody<FailBody>.self, limit: gateway.configuration.maxBodyBytes)
        let answers = try await Self.each(body.jobs) { id, item in
            let retryAt = try await fail(id, item, tenant: principal.tenantFilter)
            return ItemAnswer(job_id: id.description, status: retryAt == nil ? "failed" : "retried", retry_at: retryAt.map(Timestamp.format))
        }
        return try JSONResponse.make(["results": answers])
    }

    private func complete(_ id: JobID, _ body: CompleteBody) async throws {
        let result = try body.result.map { try JSON.encode($0) }
        try await store.complete(id, lease: try Self.token(body.lease_token), result: result)
        // Counted from what the lease handed out; a job leased elsewhere (a service kind's, one
        // leased through another gateway) is read back once.
        let now = Date()
        if let lease = gateway.remoteLeases.take(id) {
            spool.statistics.record(.completed, tenant: lease.tenant, queue: lease.queue,
                                    wait: lease.startedAt.map { $0.timeIntervalSince(lease.runAt) },
                                    run: lease.startedAt.map { now.timeIntervalSince($0) }, at: now)
        } else if let job = try? await store.job(id, tenant: nil) {
            spool.statistics.record(.completed, job: job, at: now)
        }
    }

    /// Records a failed attempt; returns when it runs again (`nil`: failed for good).
    private func fail(_ id: JobID, _ body: FailBody, tenant: String?) async throws -> Date? {
        try body.validate()
        // Another tenant's job, or one that is not running under this token, is a lost lease.
        guard let job = try await store.job(id, tenant: tenant), job.state == .processing else { throw SpoolError.leaseLost(id) }
        let retryable = body.retryable ?? true
        let reason = body.timed_out == true ? "timeout" : retryable ? "error" : "non_retryable"
        let now = Date()
        let retryAt = RetryPlan.retryAt(attempt: job.attempt, maxAttempts: job.maxAttempts, retryable: retryable,
                                        retryAfter: body.retry_after_seconds.map { .seconds(fractional: $0) },
                                        backoff: spool.configuration.queue(job.queue).backoff, now: now)
        let error = AttemptError(attempt: job.attempt, message: String(body.error.prefix(RetryPlan.maxMessageLength)), at: now, reason: reason,
                                 worker: job.workerID)
        try await store.fail(id, lease: try Self.token(body.lease_token), error: error, retryAt: retryAt)
        _ = gateway.remoteLeases.take(id)
        spool.statistics.record(retryAt == nil ? .failed : .retried, job: job, at: now)
        return retryAt
    }

    /// Runs `body` for every item at once and answers each, in order: an item's error becomes
    /// its answer, not the call's (only an unavailable store fails the whole call).
    private static func each<Body: Item>(_ items: [Body],
                                         _ body: @escaping @Sendable (JobID, Body) async throws -> ItemAnswer) async throws -> [ItemAnswer] {
        guard !items.isEmpty, items.count <= maxItems else { throw Problem.validation("jobs", "must hold 1 to \(maxItems) items") }
        for (index, item) in items.enumerated() {
            guard item.job_id != nil else { throw Problem.validation("jobs[\(index)].job_id", "is required") }
            do { try item.validate() } catch let problem as Problem {
                throw Problem.validation("jobs[\(index)]", problem.detail)
            }
        }
        return try await withThrowingTaskGroup(of: (Int, ItemAnswer).self) { group in
            for (index, item) in items.enumerated() {
                group.addTask {
                    let raw = item.job_id ?? ""
                    guard let jobID = JobID(raw.lowercased()) else {
                        return (index, ItemAnswer(job_id: raw, status: "validation", detail: "jobs[\(index)].job_id: not a job id"))
                    }
                    do {
                        return (index, try await body(jobID, item))
                    } catch let error as SpoolError {
                        if case .unavailable = error { throw error }
                        let problem = Problem.from(error)
                        return (index, ItemAnswer(job_id: raw, status: problem.shortType, detail: problem.detail))
                    } catch let problem as Problem {
                        return (index, ItemAnswer(job_id: raw, status: problem.shortType, detail: problem.detail))
                    }
                }
            }
            var answers = [ItemAnswer?](repeating: nil, count: items.count)
            for try await (index, answer) in group { answers[index] = answer }
            return answers.compactMap { $0 }
        }
    }
}

/// What this gateway leased to remote workers (tenant, queue and timestamps, not the jobs),
/// kept until the outcome is reported here or the lease is long past, so that completions
/// count in the queue statistics without reading the job again.
final class RemoteLeases: Sendable {
    struct Lease: Sendable {
        var tenant: String
        var queue: String
        var runAt: Date
        var startedAt: Date?
        var until: Date
    }
    private let table = Mutex<[JobID: Lease]>([:])
    static let limit = 100_000

    func add(_ jobs: [Job], until: Date) {
        guard !jobs.isEmpty else { return }
        table.withLock { leases in
            if leases.count + jobs.count > Self.limit {
                let now = Date()
                leases = leases.filter { $0.value.until > now }
            }
            for job in jobs where leases.count < Self.limit {
                leases[job.id] = Lease(tenant: job.tenant, queue: job.queue, runAt: job.runAt, startedAt: job.startedAt, until: until)
            }
        }
    }

    func take(_ id: JobID) -> Lease? { table.withLock { $0.removeValue(forKey: id) } }
}
