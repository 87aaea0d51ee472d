import Foundation

/// What workers say about the queues they work and the kinds they run: the worker registry
/// as last read, and what remote workers leasing through a gateway here said lately (kept
/// apart, for a minute: their registry entry may not be written yet when the registry is read).
struct AnnouncedKinds: Sendable {
    /// Pairs of queue and kind, at most `limit` of them (a worker cannot fill the memory).
    struct Table: Sendable {
        var byQueue: [String: Set<String>] = [:]
        private(set) var count = 0
        static let limit = 10_000

        mutating func add(_ kinds: [String], queues: [String]) {
            for queue in queues where count < Self.limit {
                if byQueue[queue] == nil { byQueue[queue] = []; count += 1 }
                // (Spool's own webhook deliverer says nothing about what a deployment runs.)
                for kind in kinds where count < Self.limit && kind != Webhook.kind && byQueue[queue]?.contains(kind) == false {
                    byQueue[queue]?.insert(kind)
                    count += 1
                }
            }
        }
    }

    var registry = Table()
    var leased = Table()
    var leasedSince: ContinuousClock.Instant = .now
    var readAt: ContinuousClock.Instant?
    /// The read of the registry under way, which every caller that needs news waits for.
    var reading: Task<Void, Never>?

    /// The kinds workers run for `queue`, or `nil` when no worker works it.
    func kinds(of queue: String) -> Set<String>? {
        switch (registry.byQueue[queue], leased.byQueue[queue]) {
        case (nil, nil): nil
        case (let a?, nil): a
        case (nil, let b?): b
        case (let a?, let b?): a.union(b)
        }
    }

    var byQueue: [String: Set<String>] { registry.byQueue.merging(leased.byQueue) { $0.union($1) } }

    mutating func announce(_ kinds: [String], queues: [String]) {
        // Announcements older than a minute go (a worker polling renews its own at once).
        if ContinuousClock.now - leasedSince > .seconds(60) { leased = Table(); leasedSince = .now }
        leased.add(kinds, queues: queues)
    }

    mutating func replace(with workers: [WorkerInfo]) {
        registry = Table()
        for worker in workers { registry.add(worker.kinds, queues: worker.queues) }
    }
}

// Which jobs this deployment takes (the rules are ``JobAdmission``'s; this is where their
// inputs come from: the handlers here and the worker registry).
extension Spool {
    /// Throws ``SpoolError/invalid(field:reason:)`` when the admission rules of the
    /// configuration refuse `job` (whether or not they are ``JobAdmission/enforced``: the
    /// gateway and the CLI ask for every job).
    ///
    /// A kind or queue missing from what the registry said is looked up again (at most once a
    /// second), so a worker started a moment ago is believed at once. A registry that cannot be
    /// read leaves what is known as it is.
    public func admit(_ job: NewJob) async throws {
        await readAnnouncedKindsOnce()
        let takes = takesKind(job)
        if takes != nil, admissionRefusal(job, takesKind: takes) == nil { return }
        // Refused, or taken without knowing the queue's kinds: a worker may have announced some
        // since. (The refusal thrown is the one made after the re-read: its known kinds are fresh.)
        await readAnnouncedKinds(olderThan: .seconds(1))
        if let refusal = admissionRefusal(job, takesKind: takesKind(job)) { throw refusal }
    }

    /// The kinds `queue` takes, or `nil` for any (see ``JobAdmission/acceptedKinds(queue:handlers:announced:)``).
    public func acceptedKinds(queue: String) -> Set<String>? {
        configuration.admission.acceptedKinds(queue: queue, handlers: ownKinds, announced: announcedKinds)
    }

    /// Whether `name` is a queue this deployment knows (`default`, configured, admitted, or
    /// worked by a worker in the registry).
    public func knowsQueue(_ name: String) -> Bool {
        let worked = announced.withLock { $0.kinds(of: name) != nil }
        return worked || configuration.admission.knowsQueue(name, configured: configuration.queues.keys)
    }

    /// Kinds workers in the registry (or leasing through a gateway here) run, per queue.
    public var announcedKinds: [String: Set<String>] { announced.withLock { $0.byQueue } }

    /// Records kinds a worker runs (a gateway calls this when a remote worker leases).
    public func announce(kinds: [String], queues: [String]) {
        announced.withLock { $0.announce(kinds, queues: queues) }
    }

    /// This process's handlers, without Spool's own webhook deliverer.
    public var ownKinds: Set<String> { Set(registeredKinds.filter { $0 != Webhook.kind }) }

    private func takesKind(_ job: NewJob) -> Bool? {
        let hasHandlers = handlerCount(excluding: Webhook.kind) > 0
        let forQueue = announced.withLock { $0.kinds(of: job.queue) }
        return configuration.admission.takes(job.kind, queue: job.queue, hasHandler: job.kind != Webhook.kind && handler(for: job.kind) != nil,
                                             hasHandlers: hasHandlers, announced: forQueue)
    }

    private func admissionRefusal(_ job: NewJob, takesKind: Bool?) -> SpoolError? {
        configuration.admission.refusal(job, queueKnown: knowsQueue(job.queue), takesKind: takesKind) { acceptedKinds(queue: job.queue) }
    }

    /// Reads the registry's kinds if this process has not yet.
    func readAnnouncedKindsOnce() async {
        if announced.withLock({ $0.readAt == nil }) { await readAnnouncedKinds(olderThan: .zero) }
    }

    /// Reads the registry again if the last read is older than a second.
    func refreshAnnouncedKinds() async { await readAnnouncedKinds(olderThan: .seconds(1)) }

    /// Reads the registry again if the last read is older than `age`; a read under way is
    /// waited for rather than repeated (one read at a time, at most one a second).
    private func readAnnouncedKinds(olderThan age: Duration) async {
        let read: Task<Void, Never>? = announced.withLock { state in
            if let reading = state.reading { return reading }
            if let readAt = state.readAt, ContinuousClock.now - readAt < age { return nil }
            let task = Task {
                let workers: [WorkerInfo]
                do { workers = try await store.workers(tenant: nil) } catch {
                    logger.warning("could not read the worker registry for job admission; going on with what is known", metadata: ["error": "\(error)"])
                    announced.withLock { $0.readAt = .now; $0.reading = nil }
                    return
                }
                announced.withLock { state in
                    state.replace(with: workers)
                    state.readAt = .now
                    state.reading = nil
                }
            }
            state.reading = task
            return task
        }
        await read?.value
    }
}
