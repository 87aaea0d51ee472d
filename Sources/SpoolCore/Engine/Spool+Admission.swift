import Foundation

/// What the worker registry says about the queues workers work and the kinds they run, as
/// last read, plus what workers leasing through a gateway here said since.
struct AnnouncedKinds: Sendable {
    var byQueue: [String: Set<String>] = [:]
    var readAt: ContinuousClock.Instant?
    private var count = 0
    private static let limit = 10_000

    /// At most 10,000 pairs of queue and kind between two reads of the registry (a worker
    /// cannot fill the memory; each read starts afresh).
    mutating func add(_ kinds: [String], queues: [String]) {
        for queue in queues where count < Self.limit {
            if byQueue[queue] == nil { byQueue[queue] = []; count += 1 }
            // (Spool's own webhook deliverer says nothing about what a deployment runs.)
            for kind in kinds where count < Self.limit && kind != Webhook.kind && !byQueue[queue, default: []].contains(kind) {
                byQueue[queue, default: []].insert(kind)
                count += 1
            }
        }
    }

    /// Claims the next read of the registry if the last one is older than `age` (one caller
    /// reads; the others go on with what is known).
    mutating func claimRead(olderThan age: Duration) -> Bool {
        if let readAt, ContinuousClock.now - readAt < age { return false }
        readAt = .now
        return true
    }

    mutating func replace(with workers: [WorkerInfo]) {
        byQueue = [:]
        count = 0
        for worker in workers { add(worker.kinds, queues: worker.queues) }
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
        if announced.withLock({ $0.readAt == nil }) { await readAnnouncedKinds(olderThan: .zero) }
        guard let refusal = admissionRefusal(job) else {
            // Taken without knowing the queue's kinds: a worker may have announced some since.
            guard takesKind(job) == nil else { return }
            await readAnnouncedKinds(olderThan: .seconds(1))
            if let refusal = admissionRefusal(job) { throw refusal }
            return
        }
        await readAnnouncedKinds(olderThan: .seconds(1))
        if admissionRefusal(job) != nil { throw refusal }
    }

    /// The kinds `queue` takes, or `nil` for any (see ``JobAdmission/acceptedKinds(queue:handlers:announced:)``).
    public func acceptedKinds(queue: String) -> Set<String>? {
        configuration.admission.acceptedKinds(queue: queue, handlers: ownKinds, announced: announcedKinds)
    }

    /// Whether `name` is a queue this deployment knows (`default`, configured, admitted, or
    /// worked by a worker in the registry).
    public func knowsQueue(_ name: String) -> Bool {
        let worked = announced.withLock { $0.byQueue[name] != nil }
        return worked || configuration.admission.knowsQueue(name, configured: configuration.queues.keys, announced: [:])
    }

    /// Kinds workers in the registry (or leasing through a gateway here) run, per queue.
    public var announcedKinds: [String: Set<String>] { announced.withLock { $0.byQueue } }

    /// Records kinds a worker runs (a gateway calls this when a remote worker leases).
    public func announce(kinds: [String], queues: [String]) {
        announced.withLock { $0.add(kinds, queues: queues) }
    }

    /// This process's handlers, without Spool's own webhook deliverer.
    public var ownKinds: Set<String> { Set(registeredKinds.filter { $0 != Webhook.kind }) }

    private func takesKind(_ job: NewJob) -> Bool? {
        let hasHandlers = handlerCount(excluding: Webhook.kind) > 0
        let forQueue = announced.withLock { $0.byQueue[job.queue] }
        return configuration.admission.takes(job.kind, queue: job.queue, hasHandler: job.kind != Webhook.kind && handler(for: job.kind) != nil,
                                             hasHandlers: hasHandlers, announced: forQueue)
    }

    private func admissionRefusal(_ job: NewJob) -> SpoolError? {
        configuration.admission.refusal(job, queueKnown: knowsQueue(job.queue), takesKind: takesKind(job)) { acceptedKinds(queue: job.queue) }
    }

    /// Reads the registry's kinds if this process has not yet.
    func readAnnouncedKindsOnce() async {
        if announced.withLock({ $0.readAt == nil }) { await readAnnouncedKinds(olderThan: .zero) }
    }

    /// Reads the registry again if the last read is older than `age` and no other caller is
    /// reading it now.
    private func readAnnouncedKinds(olderThan age: Duration) async {
        guard announced.withLock({ $0.claimRead(olderThan: age) }) else { return }
        do {
            let workers = try await store.workers(tenant: nil)
            announced.withLock { $0.replace(with: workers) }
        } catch {
            logger.warning("could not read the worker registry for job admission; going on with what is known", metadata: ["error": "\(error)"])
        }
    }
}
