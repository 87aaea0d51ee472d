import Foundation
import Logging
import Synchronization

/// The entry point for Swift code: enqueue jobs, follow and steer them, and run workers.
///
/// ```swift
/// let spool = Spool(store: try SQLiteJobStore(path: "spool.sqlite"))
/// try await spool.store.migrate()
/// spool.register(SendWelcomeEmail())
/// let job = try await spool.enqueue(SendWelcomeEmail.self, .init(userID: 42))
/// try await ServiceGroup(services: [spool.worker()], logger: logger).run()
/// ```
public final class Spool: Sendable {
    public let store: any JobStore
    public let configuration: EngineConfiguration
    public let logger: Logger
    /// This process's figures per queue and minute, written to the store once a minute.
    public let statistics = QueueStatistics()
    private let handlers = Mutex<[String: AnyJobHandler]>([:])
    private let schemas: Mutex<[String: PayloadSchema]>
    /// Kinds that workers in the registry run, per queue (see ``admit(_:)``).
    let announced = Mutex(AnnouncedKinds())

    public init(store: any JobStore, configuration: EngineConfiguration = EngineConfiguration(), logger: Logger = Logger(label: "spool")) {
        self.store = store
        self.configuration = configuration
        self.logger = logger
        self.schemas = Mutex(configuration.payloadSchemas)
    }

    // MARK: Handlers

    public func register<H: JobHandler>(_ handler: H) {
        register(AnyJobHandler(handler))
    }

    public func register(_ handler: AnyJobHandler) {
        handlers.withLock { $0[handler.kind] = handler }
    }

    /// Registers a handler written as a closure that returns nothing.
    public func register<P: Decodable & Sendable>(kind: String, payload: P.Type, _ run: @escaping @Sendable (P, JobContext) async throws -> Void) {
        register(AnyJobHandler(kind: kind) { data, context in
            let payload: P
            do { payload = try JSON.decode(P.self, from: data) } catch {
                throw JobFailure.nonRetryable("payload does not match \(kind): \(error)")
            }
            try await run(payload, context)
            return nil
        })
    }

    public func handler(for kind: String) -> AnyJobHandler? { handlers.withLock { $0[kind] } }
    public var registeredKinds: [String] { handlers.withLock { $0.keys.sorted() } }
    func handlerCount(excluding kind: String) -> Int { handlers.withLock { $0.count - ($0[kind] == nil ? 0 : 1) } }

    // MARK: Payload schemas

    /// Requires the payloads of `kind` to match `schema` at enqueue (from Swift, the CLI or
    /// HTTP), whoever runs the kind: a handler here, a remote worker, a service or a command.
    /// `nil` removes the requirement.
    public func setPayloadSchema(_ schema: PayloadSchema?, forKind kind: String) {
        schemas.withLock { $0[kind] = schema }
    }

    public var payloadSchemas: [String: PayloadSchema] { schemas.withLock { $0 } }

    /// Throws ``SpoolError/invalid(field:reason:)`` (the field is the failing path, such as
    /// `payload/size`) when the job's payload does not match its kind's schema.
    public func checkPayload(_ job: NewJob) throws(SpoolError) {
        guard let schema = schemas.withLock({ $0[job.kind] }) else { return }
        try schema.check(job.payload)
    }

    // MARK: Enqueue

    /// Enqueues one job. Returns once it is durably stored.
    @discardableResult
    public func enqueue(_ job: NewJob) async throws -> EnqueueResult {
        try await enqueue([job])[0]
    }

    /// Enqueues jobs atomically: all or none.
    public func enqueue(_ jobs: [NewJob]) async throws -> [EnqueueResult] {
        let (jobs, defaults, limits) = try await prepare(jobs)
        let results = try await store.enqueue(jobs, defaults: defaults, depthLimits: limits)
        JobMetrics.enqueued(results)
        return results
    }

    /// Requests with their queues' settings filled in and checked (and admitted, when the
    /// configuration enforces ``JobAdmission``), and those queues' defaults and depth limits
    /// (what every store call that enqueues takes).
    func prepare(_ jobs: [NewJob], admitting: Bool = true) async throws -> (jobs: [NewJob], defaults: [String: JobDefaults], limits: [String: Int]) {
        var defaults: [String: JobDefaults] = [:]
        var limits: [String: Int] = [:]
        var jobs = jobs
        for i in jobs.indices {
            let queue = configuration.queue(jobs[i].queue)
            if jobs[i].callbackURL == nil { jobs[i].callbackURL = queue.callbackURL }
            let job = jobs[i]
            try job.validate()
            if admitting && configuration.admission.enforced { try await admit(job) }
            try checkPayload(job)
            defaults[job.queue] = JobDefaults(queue)
            if let limit = queue.depthLimit { limits[job.queue] = limit }
        }
        return (jobs, defaults, limits)
    }

    /// Enqueues a job for a handler type, with a typed payload.
    @discardableResult
    public func enqueue<H: JobHandler>(
        _ handler: H.Type, _ payload: some Encodable, queue: String = "default", priority: Int = 0, runAt: Date? = nil,
        maxAttempts: Int? = nil, timeout: Duration? = nil, idempotencyKey: String? = nil
    ) async throws -> Job {
        let job = try NewJob(
            queue: queue, kind: H.kind, payload: payload, priority: priority, runAt: runAt,
            maxAttempts: maxAttempts, timeout: timeout, idempotencyKey: idempotencyKey)
        return try await enqueue(job).job
    }

    // MARK: Follow and steer

    public func job(_ id: JobID, tenant: String? = nil) async throws -> Job? { try await store.job(id, tenant: tenant) }
    public func list(_ filter: JobFilter) async throws -> JobPage { try await store.list(filter) }
    public func cancel(_ id: JobID, tenant: String? = nil) async throws -> Job { try await store.cancel(id, tenant: tenant) }
    /// Puts a failed or cancelled job back to run with a fresh set of attempts (its queue's
    /// `maxAttempts`), numbered on from its last attempt: errors read 1, 2, 3, then 4, 5, 6.
    public func retry(_ id: JobID, tenant: String? = nil) async throws -> Job {
        guard let job = try await store.job(id, tenant: tenant) else { throw SpoolError.notFound(id) }
        return try await store.retry(id, tenant: tenant, attempts: configuration.queue(job.queue).maxAttempts)
    }
    public func pause(queue: String) async throws { try await store.setPaused(true, queue: try await existingQueue(queue)) }
    public func resume(queue: String) async throws { try await store.setPaused(false, queue: try await existingQueue(queue)) }

    /// Puts every failed job of the queue (of `tenant`, or of all) back to run: the
    /// dead-letter redrive, each with a fresh set of attempts as ``retry(_:tenant:)``. Returns how many.
    public func retryFailed(queue: String, tenant: String? = nil) async throws -> Int {
        try await store.retryFailed(queue: try await existingQueue(queue), tenant: tenant, attempts: configuration.queue(queue).maxAttempts)
    }

    /// Deletes the queue's jobs that wait to run (of `tenant`, or of all). Returns how many.
    public func purge(queue: String, tenant: String? = nil) async throws -> Int {
        try await store.purge(queue: try await existingQueue(queue), tenant: tenant)
    }

    /// `name`, if the deployment knows the queue or it holds jobs; otherwise throws
    /// ``SpoolError/notFoundNamed(_:)`` (a typo must not pause a queue no one uses).
    public func existingQueue(_ name: String) async throws -> String {
        if knowsQueue(name) || name == Webhook.queue { return name }
        await refreshAnnouncedKinds()  // a worker of the queue may have started since
        if knowsQueue(name) { return name }
        guard try await store.queueStats(tenant: nil).contains(where: { $0.name == name }) else {
            throw SpoolError.notFoundNamed("queue '\(name.prefix(128))' not found (configure it under 'queues' in the config file)")
        }
        return name
    }
    public func queueStats() async throws -> [QueueStats] { try await store.queueStats(tenant: nil) }

    /// Every queue a client should see, by name: those holding jobs (of `tenant`, or of all),
    /// the configured ones and `default`, each with its counts and settings.
    public func queueOverview(tenant: String? = nil) async throws -> [QueueDocument] {
        await refreshAnnouncedKinds()
        var byName = Dictionary(uniqueKeysWithValues: try await store.queueStats(tenant: tenant).map { ($0.name, $0) })
        let admission = configuration.admission
        let worked = announcedKinds.keys.filter { $0 != Webhook.queue }
        for name in Array(configuration.queues.keys) + admission.queues + admission.kinds.keys + worked + ["default"] where byName[name] == nil {
            byName[name] = .empty(name)
        }
        return byName.values.sorted { $0.name < $1.name }.map {
            QueueDocument($0, configuration: configuration.queue($0.name), kinds: $0.name == Webhook.queue ? [Webhook.kind] : acceptedKinds(queue: $0.name))
        }
    }

    /// Waits until the job reaches a terminal state (polling the store), or `timeout` passes.
    public func waitUntilFinished(_ id: JobID, timeout: Duration = .seconds(60), pollEvery: Duration = .milliseconds(20)) async throws -> Job {
        let deadline = ContinuousClock.now + timeout
        while true {
            guard let job = try await store.job(id, tenant: nil) else { throw SpoolError.notFound(id) }
            if job.state.isFinished || ContinuousClock.now >= deadline { return job }
            try await Task.sleep(for: pollEvery)
        }
    }

    // MARK: Workers

    /// A service that runs this process's workers for `queues` (every configured queue and
    /// `default` when `nil`) plus the maintenance duties (lease rescue, pruning). When a
    /// webhook delivery handler is registered, the internal ``Webhook/queue`` is always worked.
    public func worker(queues: [String]? = nil) -> SpoolWorker {
        var names = Set(queues ?? Array(configuration.queues.keys) + ["default"])
        if handler(for: Webhook.kind) != nil { names.insert(Webhook.queue) }
        return SpoolWorker(spool: self, queues: names.sorted())
    }
}
