import Foundation

/// What the worker registry says about the kinds workers run, as last read.
struct AnnouncedKinds: Sendable {
    var byQueue: [String: Set<String>] = [:]
    var readAt: ContinuousClock.Instant?
    private var count = 0
    private static let limit = 10_000

    mutating func add(_ kinds: [String], queues: [String]) {
        for queue in queues {
            // (Spool's own webhook deliverer says nothing about what a deployment runs.)
            for kind in kinds where count < Self.limit && kind != Webhook.kind && !byQueue[queue, default: []].contains(kind) {
                byQueue[queue, default: []].insert(kind)
                count += 1
            }
        }
    }
}

// Which jobs this deployment takes (the rules are ``JobAdmission``'s; this is where their
// inputs come from: the handlers here and the worker registry).
extension Spool {
    /// Throws ``SpoolError/invalid(field:reason:)`` when the admission rules of the
    /// configuration refuse `job` (whether or not they are ``JobAdmission/enforced``: the
    /// gateway and the CLI ask for every job).
    ///
    /// A kind missing from what the registry said is looked up again (at most once a second),
    /// so a worker started a moment ago is believed at once.
    public func admit(_ job: NewJob) async throws {
        // The common case, on the enqueue path, without building a set: a kind with a handler
        // here, on a known queue without a list of its own, with no callback URL to check.
        let admission = configuration.admission
        if job.callbackURL == nil, job.kind != Webhook.kind, job.queue != Webhook.queue, admission.kinds[job.queue] == nil,
           handler(for: job.kind) != nil, knowsQueue(job.queue) { return }
        try await readAnnouncedKindsOnce()
        // Taken because nothing is known about kinds yet: a worker may have announced some since.
        let takenBlind = acceptedKinds(queue: job.queue) == nil
        if !takenBlind, admissionRefusal(job) == nil { return }
        let stale = announced.withLock { $0.readAt.map { ContinuousClock.now - $0 > .seconds(1) } ?? true }
        if stale { try await readAnnouncedKinds() }
        if let refusal = admissionRefusal(job) { throw refusal }
    }

    /// The kinds `queue` takes, or `nil` for any (see ``JobAdmission/acceptedKinds(queue:handlers:announced:)``).
    public func acceptedKinds(queue: String) -> Set<String>? {
        configuration.admission.acceptedKinds(queue: queue, handlers: ownKinds, announced: announcedKinds)
    }

    /// Whether `name` is a queue this deployment knows (`default`, configured or admitted).
    public func knowsQueue(_ name: String) -> Bool {
        configuration.admission.knowsQueue(name, configured: configuration.queues.keys)
    }

    /// Kinds workers in the registry (or leasing through a gateway here) run, per queue.
    public var announcedKinds: [String: Set<String>] { announced.withLock { $0.byQueue } }

    /// Records kinds a worker runs (a gateway calls this when a remote worker leases). At
    /// most 10,000 pairs of queue and kind are kept: a worker cannot fill the memory.
    public func announce(kinds: [String], queues: [String]) {
        announced.withLock { $0.add(kinds, queues: queues) }
    }

    /// This process's handlers, without Spool's own webhook deliverer.
    public var ownKinds: Set<String> { Set(registeredKinds.filter { $0 != Webhook.kind }) }

    private func admissionRefusal(_ job: NewJob) -> SpoolError? {
        configuration.admission.refusal(job, configuredQueues: configuration.queues.keys, handlers: ownKinds, announced: announcedKinds)
    }

    /// Reads the registry's kinds if this process has not yet.
    func readAnnouncedKindsOnce() async throws {
        if announced.withLock({ $0.readAt == nil }) { try await readAnnouncedKinds() }
    }

    private func readAnnouncedKinds() async throws {
        let workers = try await store.workers(tenant: nil)
        announced.withLock { state in
            for worker in workers { state.add(worker.kinds, queues: worker.queues) }
            state.readAt = .now
        }
    }
}
