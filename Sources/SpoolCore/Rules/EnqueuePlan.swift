import Foundation

/// How a batch of enqueue requests becomes stored jobs, kept by every store (which supplies
/// the lookups and the writes):
/// - a request whose idempotency key (per tenant) already has a job answers that job
///   (`replayed`) if it is the same request, and fails the batch with
///   ``SpoolError/idempotencyConflict(key:existing:)`` if it is not; a key used twice in one
///   batch makes one job;
/// - every other request becomes a new job, with its queue's defaults;
/// - the batch is refused whole (``DepthLimit``) if a queue would pass its depth limit.
public struct EnqueuePlan: Sendable {
    /// An idempotency key, which is per tenant.
    public struct Key: Hashable, Sendable {
        public var tenant: String
        public var key: String
    }

    public let requests: [NewJob]
    /// The keys to look up, each once, in the order of the requests.
    public let keys: [Key]

    public init(_ requests: [NewJob]) {
        self.requests = requests
        var seen = Set<Key>()
        keys = requests.compactMap { request in
            request.idempotencyKey.map { Key(tenant: request.tenant, key: $0) }
        }.filter { seen.insert($0).inserted }
    }

    /// Existing jobs named as parents, each once, sorted (stores lock and mark them in this
    /// order): those named by id, and those an earlier request of the call resolves to through
    /// its idempotency key (`existing`), when a later request names that one.
    public func externalParents(existing: [Key: Job]) -> [JobID] {
        var ids = Set<JobID>()
        for request in requests {
            for reference in request.dependsOn {
                switch reference {
                case .job(let id): ids.insert(id)
                case .request(let index):
                    guard requests.indices.contains(index), let key = requests[index].idempotencyKey,
                          let job = existing[Key(tenant: requests[index].tenant, key: key)] else { continue }
                    ids.insert(job.id)
                }
            }
        }
        return ids.sorted()
    }

    /// What a store knows of an existing parent.
    public struct Parent: Sendable {
        public var tenant: String
        public var state: JobState
        public init(tenant: String, state: JobState) { self.tenant = tenant; self.state = state }
    }

    /// What to write.
    public struct Resolution: Sendable {
        /// One per request, in order.
        public var results: [EnqueueResult]
        /// The jobs to insert (waiting, pending, scheduled, or cancelled because of a parent).
        public var new: [Job]
        /// Parent → child edges of the new jobs.
        public var edges: [(parent: JobID, child: JobID)]
        /// Why each new job created `cancelled` was cancelled: the parent that failed.
        public var cancelledBy: [JobID: JobID]
        /// Whether any new job uses a workflow feature (parents, children, a batch).
        public var usesWorkflows: Bool { !edges.isEmpty || new.contains { $0.batchID != nil } }
    }

    /// What each request answers, and the new jobs to write, given the jobs that exist under
    /// ``keys`` (missing keys have none) and the existing ``externalParents`` (a missing one,
    /// or another tenant's, refuses the whole call).
    public func resolve(existing: [Key: Job], parents: [JobID: Parent] = [:], defaults: [String: JobDefaults], now: Date) throws(SpoolError) -> Resolution {
        var made: [Key: Job] = [:]
        var results: [EnqueueResult] = []
        var new: [Job] = []
        var edges: [(parent: JobID, child: JobID)] = []
        var cancelledBy: [JobID: JobID] = [:]
        results.reserveCapacity(requests.count)
        let indexed = requests.count > 1
        for (index, request) in requests.enumerated() {
            let key = request.idempotencyKey.map { Key(tenant: request.tenant, key: $0) }
            if let key, let job = existing[key] ?? made[key] {
                guard request.isSameRequest(as: job) else { throw .idempotencyConflict(key: key.key, existing: job.id) }
                results.append(EnqueueResult(job: job, replayed: true))
                continue
            }
            var job = Job(new: request, defaults: defaults[request.queue], now: now)
            job.batchID = request.batchID
            job.onParentFailure = request.onParentFailure
            if !request.dependsOn.isEmpty {
                var states: [(JobID, JobState)] = []
                var seen = Set<JobID>()
                for reference in request.dependsOn {
                    let id: JobID, state: JobState
                    switch reference {
                    case .job(let parent):
                        guard let found = parents[parent], found.tenant == request.tenant else {
                            throw .badParent(indexed ? index : nil, parent.description, "no such job")
                        }
                        (id, state) = (parent, found.state)
                    case .request(let earlier):
                        guard earlier >= 0, earlier < index else {
                            throw .badParent(indexed ? index : nil, "jobs[\(earlier)]", "a job may only depend on jobs before it in the request")
                        }
                        let parent = results[earlier].job
                        guard parent.tenant == request.tenant else { throw .badParent(index, "jobs[\(earlier)]", "belongs to another tenant") }
                        // A replayed job's state as read under the store's lock.
                        (id, state) = (parent.id, results[earlier].replayed ? parents[parent.id]?.state ?? parent.state : parent.state)
                    }
                    if seen.insert(id).inserted { states.append((id, state)) }
                }
                job.dependsOn = states.map(\.0)
                edges += states.map { (parent: $0.0, child: job.id) }
                switch DependencyRules.standing(parents: states, policy: request.onParentFailure) {
                case .waiting(let left):
                    job.state = .waiting
                    job.parentsLeft = left
                case .ready:
                    break
                case .cancelled(let parent, let reason):
                    job.state = .cancelled
                    job.cancelReason = reason
                    job.finishedAt = now
                    cancelledBy[job.id] = parent
                }
            }
            if let key { made[key] = job }
            results.append(EnqueueResult(job: job, replayed: false))
            new.append(job)
        }
        return Resolution(results: results, new: new, edges: edges, cancelledBy: cancelledBy)
    }
}

/// The depth limit (backpressure), kept by every store: a queue holds at most `limit` waiting
/// jobs (`pending` + `scheduled`); past it an enqueue is refused with
/// ``SpoolError/queueFull(queue:limit:retryAfter:)``, which the API answers with 429.
public enum DepthLimit {
    /// How long a refused client is asked to wait.
    public static let retryAfter: Duration = .seconds(1)

    /// New jobs per queue (those that count towards its depth: not waiting for parents).
    public static func adding(_ jobs: [Job]) -> [String: Int] {
        var adding: [String: Int] = [:]
        for job in jobs where job.state.isQueued { adding[job.queue, default: 0] += 1 }
        return adding
    }

    /// Refuses adding `adding` jobs to `queue`, which holds `current` waiting ones.
    public static func check(queue: String, current: Int, adding: Int, limit: Int) throws(SpoolError) {
        if current + adding > limit { throw .queueFull(queue: queue, limit: limit, retryAfter: retryAfter) }
    }

    /// Single enqueues gathered into one write, each with its queue's limit (`nil`: none),
    /// admitted in arrival order: those past the limit are refused alone. `depth` holds the
    /// current depth of every limited queue.
    public static func admit(_ items: [(Job, Int?)], depth: [String: Int]) -> (accepted: [Job], results: [Result<EnqueueResult, SpoolError>]) {
        var depth = depth
        var accepted: [Job] = []
        var results: [Result<EnqueueResult, SpoolError>] = []
        results.reserveCapacity(items.count)
        for (job, limit) in items {
            if let limit {
                let current = depth[job.queue] ?? 0
                if current + 1 > limit {
                    results.append(.failure(.queueFull(queue: job.queue, limit: limit, retryAfter: retryAfter)))
                    continue
                }
                depth[job.queue] = current + 1
            }
            accepted.append(job)
            results.append(.success(EnqueueResult(job: job, replayed: false)))
        }
        return (accepted, results)
    }

    /// The queues of `items` that have a limit, sorted (stores that lock them do so in order).
    public static func limitedQueues(_ items: [(Job, Int?)]) -> [String] {
        Set(items.compactMap { $0.1 != nil ? $0.0.queue : nil }).sorted()
    }
}
