import Foundation

/// A job as stored: its request, its state and the record of its attempts.
///
/// This is the status document a client polls for. `payload` and `result` hold JSON text.
public struct Job: Sendable, Hashable {
    public var id: JobID
    /// The tenant that owns the job; tenants never see each other's jobs.
    public var tenant: String
    public var queue: String
    /// Which handler runs the job.
    public var kind: String
    /// The job's input, as JSON text.
    public var payload: Data
    /// Higher runs first within a queue; equal priorities run in FIFO order.
    public var priority: Int
    public var state: JobState
    /// The number of attempts started so far (1 while the first attempt runs).
    public var attempt: Int
    public var maxAttempts: Int
    /// When the job may run (the delay of a delayed job, or the end of a retry's backoff).
    public var runAt: Date
    /// The longest one attempt may run before it is stopped and counted as failed.
    public var timeout: Duration
    public var progress: JobProgress?
    /// The handler's result, as JSON text, once `completed`.
    public var result: Data?
    /// The error of every failed attempt, oldest first.
    public var errors: [AttemptError]
    public var createdAt: Date
    /// When the latest attempt started.
    public var startedAt: Date?
    /// When the job reached a terminal state.
    public var finishedAt: Date?
    public var idempotencyKey: String?
    public var callbackURL: String?
    public var tags: [String]
    /// The worker holding the lease while `processing`.
    public var workerID: String?
    public var leaseExpiresAt: Date?
    /// The parent jobs this job waits for (`waiting` until all have finished).
    public var dependsOn: [JobID] = []
    /// What happens to this job when a parent fails for good or is cancelled.
    public var onParentFailure: ParentFailurePolicy = .cancel
    /// Parents not finished yet (while `waiting`).
    public var parentsLeft: Int = 0
    /// The batch the job belongs to.
    public var batchID: JobID?
    /// Why the job was cancelled, when Spool cancelled it (a parent failed, the batch was cancelled).
    public var cancelReason: String?

    public init(
        id: JobID, tenant: String, queue: String, kind: String, payload: Data, priority: Int,
        state: JobState, attempt: Int, maxAttempts: Int, runAt: Date, timeout: Duration,
        progress: JobProgress? = nil, result: Data? = nil, errors: [AttemptError] = [],
        createdAt: Date, startedAt: Date? = nil, finishedAt: Date? = nil,
        idempotencyKey: String? = nil, callbackURL: String? = nil, tags: [String] = [],
        workerID: String? = nil, leaseExpiresAt: Date? = nil
    ) {
        self.id = id; self.tenant = tenant; self.queue = queue; self.kind = kind
        self.payload = payload; self.priority = priority; self.state = state
        self.attempt = attempt; self.maxAttempts = maxAttempts; self.runAt = runAt
        self.timeout = timeout; self.progress = progress; self.result = result
        self.errors = errors; self.createdAt = createdAt; self.startedAt = startedAt
        self.finishedAt = finishedAt; self.idempotencyKey = idempotencyKey
        self.callbackURL = callbackURL; self.tags = tags; self.workerID = workerID
        self.leaseExpiresAt = leaseExpiresAt
    }
}

/// Progress a handler reported: a percentage and an optional message.
public struct JobProgress: Sendable, Hashable, Codable {
    /// 0 to 100.
    public var percent: Double
    public var message: String?
    public init(percent: Double, message: String? = nil) {
        self.percent = min(100, max(0, percent.isFinite ? percent : 0))
        self.message = message
    }
}

/// The error one failed attempt left behind.
public struct AttemptError: Sendable, Hashable, Codable {
    public var attempt: Int
    public var message: String
    /// When the attempt failed.
    public var at: Date
    /// Why it failed: `error`, `timeout`, `lease_expired`, `non_retryable`, `no_handler`.
    public var reason: String
    /// The worker that ran the attempt (its registry id), when known.
    public var worker: String?

    public init(attempt: Int, message: String, at: Date, reason: String = "error", worker: String? = nil) {
        self.attempt = attempt; self.message = message; self.at = at; self.reason = reason; self.worker = worker
    }
}

/// A job taken by a worker under a lease. Every later call about it carries `lease`.
public struct LeasedJob: Sendable, Hashable {
    public var job: Job
    /// The fencing token: valid only while this worker holds the job.
    public var lease: LeaseToken
    /// The job's parents and their results (in the order of `job.dependsOn`; a pruned parent is missing).
    public var parents: [ParentResult]
    public var id: JobID { job.id }
    public init(job: Job, lease: LeaseToken, parents: [ParentResult] = []) { self.job = job; self.lease = lease; self.parents = parents }
}

/// Proof that a worker holds a job. A new token is made for every lease, so a worker whose
/// lease expired and was handed to another cannot change the job any more.
public struct LeaseToken: Sendable, Hashable, CustomStringConvertible {
    public let value: String
    public init(_ value: String) { self.value = value }
    public static func make() -> LeaseToken { LeaseToken(UUID().uuidString.lowercased()) }
    public var description: String { value }
}
