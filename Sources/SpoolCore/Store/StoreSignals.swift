import Synchronization

/// In-process notifications a store raises after a commit: work arrived in a queue, a job was
/// cancelled, and the job events of the transaction. Workers and event streams listen so they
/// need not poll. Stores shared between processes also raise them for changes made elsewhere
/// (PostgreSQL `LISTEN/NOTIFY`).
public final class StoreSignals: Sendable {
    public enum Signal: Sendable, Hashable {
        /// Jobs became ready (or scheduled) in this queue.
        case workAvailable(queue: String)
        /// A queue was resumed.
        case queueResumed(queue: String)
        /// This job was cancelled; a worker running it must stop.
        case jobCancelled(JobID)
    }

    private let signalListeners = Listeners<Signal>()
    private let eventListeners = Listeners<[JobEvent]>()

    public init() {}

    /// Adds a listener; returns a token for ``removeListener(_:)``. Listeners must be quick.
    @discardableResult
    public func addListener(_ listener: @escaping @Sendable (Signal) -> Void) -> Int { signalListeners.add(listener) }
    public func removeListener(_ token: Int) { signalListeners.remove(token) }
    public func send(_ signal: Signal) { signalListeners.send(signal) }

    /// Adds a listener for job events, called with each committed transaction's events in
    /// `seq` order. Returns a token for ``removeEventListener(_:)``.
    @discardableResult
    public func addEventListener(_ listener: @escaping @Sendable ([JobEvent]) -> Void) -> Int { eventListeners.add(listener) }
    public func removeEventListener(_ token: Int) { eventListeners.remove(token) }
    public func send(events: [JobEvent]) { eventListeners.send(events) }
    /// Whether anyone listens for events (a store shared between processes need not fetch the
    /// events of other processes for a worker-only process).
    public var hasEventListeners: Bool { eventListeners.isEmpty == false }
}

/// A set of callbacks, each under a token.
private final class Listeners<Value: Sendable>: Sendable {
    private let callbacks = Mutex<[Int: @Sendable (Value) -> Void]>([:])
    private let nextToken = Atomic<Int>(0)

    func add(_ callback: @escaping @Sendable (Value) -> Void) -> Int {
        let token = nextToken.add(1, ordering: .relaxed).newValue
        callbacks.withLock { $0[token] = callback }
        return token
    }

    func remove(_ token: Int) { _ = callbacks.withLock { $0.removeValue(forKey: token) } }
    var isEmpty: Bool { callbacks.withLock { $0.isEmpty } }

    func send(_ value: Value) {
        for callback in callbacks.withLock({ Array($0.values) }) { callback(value) }
    }
}
