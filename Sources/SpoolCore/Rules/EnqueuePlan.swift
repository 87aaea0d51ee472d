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

    /// What each request answers, and the new jobs to write, given the jobs that exist under
    /// ``keys`` (missing keys have none).
    public func resolve(existing: [Key: Job], defaults: [String: JobDefaults], now: Date) throws(SpoolError) -> (results: [EnqueueResult], new: [Job]) {
        var made: [Key: Job] = [:]
        var results: [EnqueueResult] = []
        var new: [Job] = []
        results.reserveCapacity(requests.count)
        for request in requests {
            let key = request.idempotencyKey.map { Key(tenant: request.tenant, key: $0) }
            if let key, let job = existing[key] ?? made[key] {
                guard request.isSameRequest(as: job) else { throw .idempotencyConflict(key: key.key, existing: job.id) }
                results.append(EnqueueResult(job: job, replayed: true))
                continue
            }
            let job = Job(new: request, defaults: defaults[request.queue], now: now)
            if let key { made[key] = job }
            results.append(EnqueueResult(job: job, replayed: false))
            new.append(job)
        }
        return (results, new)
    }
}

/// The depth limit (backpressure), kept by every store: a queue holds at most `limit` waiting
/// jobs (`pending` + `scheduled`); past it an enqueue is refused with
/// ``SpoolError/queueFull(queue:limit:retryAfter:)``, which the API answers with 429.
public enum DepthLimit {
    /// How long a refused client is asked to wait.
    public static let retryAfter: Duration = .seconds(1)

    /// New jobs per queue.
    public static func adding(_ jobs: [Job]) -> [String: Int] {
        var adding: [String: Int] = [:]
        for job in jobs { adding[job.queue, default: 0] += 1 }
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
