import Synchronization

/// In-process notifications a store raises after a commit: work arrived in a queue, or a job
/// was cancelled. Workers listen so they need not poll. Stores shared between processes also
/// raise them for changes made elsewhere (PostgreSQL `LISTEN/NOTIFY`).
public final class StoreSignals: Sendable {
    public typealias Listener = @Sendable (Signal) -> Void

    public enum Signal: Sendable, Hashable {
        /// Jobs became ready (or scheduled) in this queue.
        case workAvailable(queue: String)
        /// A queue was resumed.
        case queueResumed(queue: String)
        /// This job was cancelled; a worker running it must stop.
        case jobCancelled(JobID)
    }

    public typealias EventListener = @Sendable ([JobEvent]) -> Void

    private let listeners = Mutex<[Int: Listener]>([:])
    private let eventListeners = Mutex<[Int: EventListener]>([:])
    private let nextToken = Atomic<Int>(0)

    public init() {}

    /// Adds a listener; returns a token for ``removeListener(_:)``. Listeners must be quick.
    @discardableResult
    public func addListener(_ listener: @escaping Listener) -> Int {
        let token = nextToken.add(1, ordering: .relaxed).newValue
        listeners.withLock { $0[token] = listener }
        return token
    }

    public func removeListener(_ token: Int) {
        _ = listeners.withLock { $0.removeValue(forKey: token) }
    }

    /// Adds a listener for job events, called with each committed transaction's events in
    /// `seq` order. Returns a token for ``removeEventListener(_:)``.
    @discardableResult
    public func addEventListener(_ listener: @escaping EventListener) -> Int {
        let token = nextToken.add(1, ordering: .relaxed).newValue
        eventListeners.withLock { $0[token] = listener }
        return token
    }

    public func removeEventListener(_ token: Int) {
        _ = eventListeners.withLock { $0.removeValue(forKey: token) }
    }

    public func send(events: [JobEvent]) {
        let current = eventListeners.withLock { Array($0.values) }
        for listener in current { listener(events) }
    }

    public func send(_ signal: Signal) {
        let current = listeners.withLock { Array($0.values) }
        for listener in current { listener(signal) }
    }
}
