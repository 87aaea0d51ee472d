import Foundation

/// The durable home of jobs. The engine, the gateway and the CLI talk only to this protocol;
/// each database has its own implementation, and every one passes the same contract suite
/// (`Tests/SpoolTests/StoreContractTests.swift`).
///
/// Rules every implementation keeps:
/// - A method returns only after its change is committed (and, for enqueue and for terminal
///   states, synced to disk as the store's durability setting says).
/// - Calls that carry a ``LeaseToken`` change nothing and throw ``SpoolError/leaseLost(_:)``
///   unless the job is `processing` under that very token (fencing).
/// - Methods that take a `tenant` act only on that tenant's jobs; `nil` means every tenant
///   (operators). Another tenant's job looks exactly like a missing one.
public protocol JobStore: Sendable {
    /// Signals the store raises after commits, so that workers wake up without polling.
    var signals: StoreSignals { get }

    /// Creates or upgrades the schema. Safe to call from several processes at once.
    func migrate() async throws

    /// Starts what the store runs in the background for this process (a shared store listens
    /// for other processes' wake-ups and events). Workers and gateways call it; calling it
    /// again does nothing.
    func startBackgroundDuties()

    /// Enqueues jobs atomically: all are written or none. A job whose idempotency key already
    /// exists (for its tenant) is not written again; its existing job is returned with
    /// `replayed == true`, or ``SpoolError/idempotencyConflict(key:existing:)`` is thrown when
    /// the existing job came from a different request (queue, kind, payload or priority).
    /// Throws ``SpoolError/queueFull(queue:limit:retryAfter:)`` when a queue in
    /// `depthLimits` would hold more waiting jobs than its limit.
    func enqueue(_ jobs: [NewJob], defaults: [String: JobDefaults], depthLimits: [String: Int]) async throws -> [EnqueueResult]

    /// Leases up to `request.limit` ready jobs of `request.queue` (of the kinds and the tenant
    /// it names, if it names them), highest priority first, then oldest first. Due scheduled
    /// jobs of the queue become ready (`pending`) first, paused queue or not; a paused queue
    /// hands out nothing.
    func lease(_ request: LeaseRequest) async throws -> LeaseBatch

    /// Renews leases. Returns the ids whose lease is no longer held (expired and taken over,
    /// or the job was cancelled): their workers must stop.
    func heartbeat(_ leases: [(JobID, LeaseToken)], leaseDuration: Duration) async throws -> Set<JobID>

    /// Records a running job's progress (fenced).
    func reportProgress(_ id: JobID, lease: LeaseToken, progress: JobProgress) async throws

    /// Marks a running job `completed` with its result (fenced).
    func complete(_ id: JobID, lease: LeaseToken, result: Data?) async throws

    /// Records a failed attempt (fenced): the job goes to `scheduled`/`pending` for a retry at
    /// `retryAt`, or to `failed` when `retryAt` is `nil`.
    func fail(_ id: JobID, lease: LeaseToken, error: AttemptError, retryAt: Date?) async throws

    /// Gives a running job back to the queue without counting the attempt (graceful shutdown).
    func release(_ id: JobID, lease: LeaseToken) async throws

    /// Cancels a job that has not finished. A running job loses its lease at once.
    func cancel(_ id: JobID, tenant: String?) async throws -> Job

    /// Puts a `failed` or `cancelled` job back in its queue with a fresh set of attempts:
    /// `attempts` more, its attempts numbered on from the last (4 after 1, 2, 3); `nil` starts
    /// the numbering again at 1 with the job's own `max_attempts`.
    func retry(_ id: JobID, tenant: String?, attempts: Int?) async throws -> Job

    /// Deletes a finished job.
    func delete(_ id: JobID, tenant: String?) async throws

    func job(_ id: JobID, tenant: String?) async throws -> Job?

    /// Jobs matching `filter`, newest first, one page at a time.
    func list(_ filter: JobFilter) async throws -> JobPage

    /// Returns `processing` jobs whose lease expired to their queue (or to `failed` if on their
    /// last attempt), recording the lost attempt, as ``LeaseRescue`` says: at most
    /// ``LeaseRescue/batchLimit`` per call, longest expired first. Returns how many.
    func rescueExpiredLeases() async throws -> Int

    /// Deletes finished jobs older than the cut-offs, at most `limit` per call. Returns how many.
    func prune(completedBefore: Date?, failedBefore: Date?, limit: Int) async throws -> Int

    func setPaused(_ paused: Bool, queue: String) async throws

    /// Every queue that has jobs or was ever paused, with counts per state (of one tenant's
    /// jobs, or of all when `tenant` is `nil`).
    func queueStats(tenant: String?) async throws -> [QueueStats]

    /// Moves every `failed` job of a queue back to `pending` (redrive the dead letters), each
    /// with `attempts` more as in ``retry(_:tenant:attempts:)``.
    func retryFailed(queue: String, tenant: String?, attempts: Int?) async throws -> Int

    /// Deletes every `pending` and `scheduled` job of a queue.
    func purge(queue: String, tenant: String?) async throws -> Int

    /// Stored events with a `seq` greater than `after` that match `filter`, oldest first, at
    /// most `limit` (up to 10,000), to resume a stream. The page says where the next one starts
    /// and whether the readable end of the log was reached: a filter that matches few events
    /// may give an empty page that is not the end.
    func eventPage(after: Int64, filter: EventFilter, limit: Int) async throws -> EventPage

    /// The highest `seq` that pruning has deleted, 0 when none was: a client resuming from
    /// below it has missed events and must be told.
    func prunedEventSeq() async throws -> Int64

    /// The `seq` of the newest stored event, 0 when there is none.
    func lastEventSeq() async throws -> Int64

    /// Deletes events older than `before`, at most `limit`. Returns how many.
    func pruneEvents(before: Date, limit: Int) async throws -> Int

    // MARK: Worker registry

    /// Adds `worker` to the registry, or refreshes its entry (everything but `startedAt`). An
    /// entry of another tenant under the same id is left alone.
    func recordWorker(_ worker: WorkerInfo) async throws

    /// The registry: one tenant's remote workers, or every worker when `tenant` is `nil`.
    func workers(tenant: String?) async throws -> [WorkerInfo]

    /// Takes a worker out of the registry (a graceful stop).
    func removeWorker(id: String) async throws

    /// Drops workers lost since before `expiredBefore`. Returns how many.
    func pruneWorkers(expiredBefore: Date) async throws -> Int

    // MARK: Queue statistics

    /// Adds rows of figures per queue and minute that one process (`writer`) counted, as one
    /// `batch`: a batch written again (after a write that timed out but committed) is ignored.
    func recordQueueMinutes(_ rows: [QueueMinute], writer: String, batch: String) async throws

    /// Every process's rows for minutes `from ..< to`, of one tenant (`nil`: all) and one queue
    /// (`nil`: all); a reader merges them (``StatsBucket/merge(_:from:count:minutes:)``).
    func queueMinutes(from: Int64, to: Int64, tenant: String?, queue: String?) async throws -> [QueueMinute]

    /// Deletes the rows of minutes before `minute`. Returns how many.
    func pruneQueueMinutes(before minute: Int64) async throws -> Int

    // MARK: Webhooks
    //
    // When a job with a callback URL reaches `completed`, `failed` or `cancelled`, the store
    // enqueues in the same transaction a delivery job (``Webhook/deliveryJob(for:)``, carrying the job document as it is then)
    // and records the delivery, so that a crash cannot lose the notification.

    /// The webhook deliveries about `job`, oldest first.
    func webhookDeliveries(of job: JobID, tenant: String?) async throws -> [WebhookDelivery]

    /// Records one attempt of the delivery whose delivery job is `delivery`.
    func recordWebhookAttempt(_ attempt: WebhookAttempt, delivery: JobID) async throws

    /// The tenant's webhook signing secret (`whsec_` + base64), made on first use and then
    /// the same for every process sharing the store.
    func webhookSecret(tenant: String) async throws -> String

    /// Claims (or renews) the duty `duty` for `holder` for `ttl`, unless another holder's claim
    /// is still running. Duties that must run once for a whole cluster (rescuing expired
    /// leases, pruning) run only where this returns true; when the leader dies, its claim
    /// expires and another process takes over.
    func claimLeadership(of duty: String, holder: String, for ttl: Duration) async throws -> Bool

    /// Gives up `holder`'s claim on `duty` (graceful shutdown), so that another process takes
    /// it over at once. Does nothing when `holder` does not hold it.
    func resignLeadership(of duty: String, holder: String) async throws

    // MARK: Workflows
    //
    // Parents (`NewJob.dependsOn`) and batches are written by `enqueue` with the jobs. When a
    // job reaches a terminal state, the same transaction releases or cancels its waiting
    // children (``DependencyRules``) and counts it in its batch, which makes its callback job
    // when the last one finishes (``BatchRules``); a retry by hand re-arms the children that
    // were cancelled because of the job.

    /// Creates a batch and enqueues `jobs` into it, atomically. A batch that is not `open` is
    /// closed at once (and finishes when its jobs do; at once if it has none).
    func createBatch(_ batch: NewBatch, jobs: [NewJob], defaults: [String: JobDefaults], depthLimits: [String: Int]) async throws -> (Batch, [EnqueueResult])

    /// The batch with its counts per state, if `tenant` may see it.
    func batch(_ id: JobID, tenant: String?) async throws -> Batch?

    /// Closes an open batch: no job may join it any more; it finishes when its jobs have.
    func closeBatch(_ id: JobID, tenant: String?) async throws -> Batch

    /// Cancels every unfinished job of a batch; no callback runs.
    func cancelBatch(_ id: JobID, tenant: String?) async throws -> Batch

    /// Adds or replaces a subscription (of its tenant).
    func saveSubscription(_ subscription: TopicSubscription) async throws

    /// Removes a subscription. Returns whether it existed.
    func removeSubscription(tenant: String, topic: String, name: String) async throws -> Bool

    /// The stored subscriptions of one tenant (`nil`: all), of one topic (`nil`: all).
    func subscriptions(tenant: String?, topic: String?) async throws -> [TopicSubscription]

    /// Records `event` and enqueues its subscribers' `jobs` (made for the subscribers named in
    /// `subscribers`, in order), atomically. An event whose idempotency key (per tenant and
    /// topic) was published before is answered as it was (`replayed`), or refused with
    /// ``SpoolError/idempotencyConflict(key:existing:)`` if it differs.
    func publish(_ event: TopicEvent, jobs: [NewJob], subscribers: [String], defaults: [String: JobDefaults], depthLimits: [String: Int]) async throws -> PublishResult

    /// Events of a topic published at or after `since`, oldest first, at most `limit`.
    func topicEvents(tenant: String, topic: String, since: Date, limit: Int) async throws -> [TopicEvent]

    /// Every topic published to, with its figures (of one tenant, or all).
    func topicSummaries(tenant: String?) async throws -> [TopicSummary]

    /// Releases connections and files.
    func close() async throws
}

extension JobStore {
    /// Retries with the numbering started again (see ``retry(_:tenant:attempts:)``).
    public func retry(_ id: JobID, tenant: String?) async throws -> Job { try await retry(id, tenant: tenant, attempts: nil) }
    public func retryFailed(queue: String, tenant: String?) async throws -> Int { try await retryFailed(queue: queue, tenant: tenant, attempts: nil) }

    /// Leases jobs of any kind and tenant (see ``lease(_:)``).
    public func lease(queue: String, limit: Int, workerID: String, leaseDuration: Duration) async throws -> LeaseBatch {
        try await lease(LeaseRequest(queue: queue, limit: limit, workerID: workerID, leaseDuration: leaseDuration))
    }

    /// The events of one ``eventPage(after:filter:limit:)``.
    public func events(after: Int64, filter: EventFilter, limit: Int) async throws -> [JobEvent] {
        try await eventPage(after: after, filter: filter, limit: limit).events
    }

    /// A store one machine uses alone: every caller may run every duty.
    public func claimLeadership(of duty: String, holder: String, for ttl: Duration) async throws -> Bool { true }
    public func resignLeadership(of duty: String, holder: String) async throws {}
    public func startBackgroundDuties() {}
}

/// Which events a subscriber wants. `nil` fields match everything.
///
/// `jobIDs` and `queues` select together: an event matches when its job is in `jobIDs` or its
/// queue is in `queues` (a WebSocket client subscribed to two jobs and a queue). `tenant` and
/// `kind` then narrow the selection.
public struct EventFilter: Sendable, Hashable {
    public var tenant: String?
    public var jobIDs: Set<JobID>?
    public var queues: Set<String>?
    public var kind: String?

    public init(tenant: String? = nil, jobIDs: Set<JobID>? = nil, queues: Set<String>? = nil, kind: String? = nil) {
        self.tenant = tenant; self.jobIDs = jobIDs; self.queues = queues; self.kind = kind
    }

    public func matches(_ event: JobEvent) -> Bool {
        guard tenant == nil || tenant == event.tenant, kind == nil || kind == event.kind else { return false }
        if jobIDs == nil && queues == nil { return true }
        return jobIDs?.contains(event.jobID) == true || queues?.contains(event.queue) == true
    }
}

/// One page of stored events (see ``JobStore/eventPage(after:filter:limit:)``).
public struct EventPage: Sendable {
    public var events: [JobEvent]
    /// Where the next page starts: pass it as `after`.
    public var next: Int64
    /// Whether the log was read to its end (as far as it can be read now).
    public var atEnd: Bool
    public init(events: [JobEvent], next: Int64, atEnd: Bool) { self.events = events; self.next = next; self.atEnd = atEnd }
}

/// Values a job takes from its queue's settings when its request does not name them.
public struct JobDefaults: Sendable, Hashable {
    public var maxAttempts: Int
    public var timeout: Duration
    public init(maxAttempts: Int, timeout: Duration) { self.maxAttempts = maxAttempts; self.timeout = timeout }
    public init(_ queue: QueueConfiguration) { self.init(maxAttempts: queue.maxAttempts, timeout: queue.timeout) }
}

/// What one lease call handed out.
public struct LeaseBatch: Sendable {
    public var jobs: [LeasedJob]
    /// The earliest run-at of the queue's scheduled jobs, so an idle worker knows when to look again.
    public var nextRunAt: Date?
    public init(jobs: [LeasedJob], nextRunAt: Date?) { self.jobs = jobs; self.nextRunAt = nextRunAt }
}

/// What a worker asks a store for when it leases.
public struct LeaseRequest: Sendable, Hashable {
    public var queue: String
    /// At most this many jobs (1...1000).
    public var limit: Int
    /// Recorded on each job's attempt.
    public var workerID: String
    public var leaseDuration: Duration
    /// Only jobs of these kinds (`nil`: any kind): workers that share a queue take only the
    /// kinds they can run.
    public var kinds: [String]?
    /// Only this tenant's jobs (`nil`: every tenant): a remote worker's token binds it.
    public var tenant: String?

    public init(queue: String, limit: Int, workerID: String, leaseDuration: Duration, kinds: [String]? = nil, tenant: String? = nil) {
        self.queue = queue; self.limit = limit; self.workerID = workerID; self.leaseDuration = leaseDuration
        self.kinds = kinds; self.tenant = tenant
    }
}

/// A filter for listing jobs.
public struct JobFilter: Sendable, Hashable {
    public var tenant: String?
    public var queue: String?
    public var state: JobState?
    public var kind: String?
    /// Only jobs carrying this tag.
    public var tag: String?
    /// Only the job of this idempotency key (one per tenant).
    public var idempotencyKey: String?
    /// Only the jobs of this batch.
    public var batchID: JobID?
    /// Also list the internal webhook delivery jobs (always when `queue` names their queue).
    public var includeInternal = false
    /// At most 1000.
    public var limit: Int
    /// The `nextCursor` of the previous page.
    public var cursor: String?

    public init(tenant: String? = nil, queue: String? = nil, state: JobState? = nil, kind: String? = nil, tag: String? = nil,
                idempotencyKey: String? = nil, batchID: JobID? = nil, limit: Int = 50, cursor: String? = nil) {
        self.tenant = tenant; self.queue = queue; self.state = state; self.kind = kind
        self.tag = tag; self.idempotencyKey = idempotencyKey; self.batchID = batchID
        self.limit = limit; self.cursor = cursor
    }
}

/// One page of a job listing.
public struct JobPage: Sendable {
    public var jobs: [Job]
    /// Pass as `cursor` to get the next page; `nil` on the last page.
    public var nextCursor: String?
    public init(jobs: [Job], nextCursor: String?) { self.jobs = jobs; self.nextCursor = nextCursor }
}

/// A queue's counts per state and its health at a glance.
public struct QueueStats: Sendable, Hashable {
    public var name: String
    public var paused: Bool
    public var counts: [JobState: Int]
    /// How long the oldest ready job has waited, if any.
    public var oldestPendingAge: Duration?
    public init(name: String, paused: Bool, counts: [JobState: Int], oldestPendingAge: Duration?) {
        self.name = name; self.paused = paused; self.counts = counts; self.oldestPendingAge = oldestPendingAge
    }
    /// A queue with no jobs.
    public static func empty(_ name: String) -> QueueStats {
        QueueStats(name: name, paused: false, counts: [:], oldestPendingAge: nil)
    }
    /// Jobs waiting to run (`pending` + `scheduled`): what the depth limit counts.
    public var depth: Int { (counts[.pending] ?? 0) + (counts[.scheduled] ?? 0) }
}
