import Foundation
import Synchronization

/// Fans job events out to in-process subscribers (SSE streams, WebSocket sessions).
///
/// Each subscriber has a bounded buffer. One that falls behind by more than its buffer is
/// closed rather than slowing the engine or the other subscribers; it can reconnect and resume
/// from the last `seq` it saw (the store keeps events for a retention window).
public final class EventHub: Sendable {
    /// A live feed of the events that match a filter.
    public final class Subscription: Sendable {
        public let events: AsyncStream<JobEvent>
        fileprivate let continuation: AsyncStream<JobEvent>.Continuation
        fileprivate let filter: Mutex<EventFilter>
        fileprivate let limit: Int
        fileprivate let pending = Atomic<Int>(0)
        private let onEnd: @Sendable () -> Void

        fileprivate init(filter: EventFilter, buffer: Int, onEnd: @escaping @Sendable () -> Void) {
            (events, continuation) = AsyncStream.makeStream(of: JobEvent.self, bufferingPolicy: .unbounded)
            self.filter = Mutex(filter)
            self.limit = buffer
            self.onEnd = onEnd
        }

        /// Changes what the subscription receives (WebSocket subscribe/unsubscribe).
        public func update(_ change: (inout EventFilter) -> Void) { filter.withLock { change(&$0) } }

        /// Call after taking an event from `events`, to keep the backlog count right.
        public func consumed() { pending.subtract(1, ordering: .relaxed) }

        /// Ends the stream (the subscriber went away).
        public func cancel() {
            continuation.finish()
            onEnd()
        }

        /// Whether the hub closed this subscription because it fell behind.
        public var overflowed: Bool { overflow.load(ordering: .relaxed) }
        fileprivate let overflow = Atomic<Bool>(false)
    }

    private let subscribers = Mutex<[ObjectIdentifier: Subscription]>([:])
    private let signals: StoreSignals
    private let listenerToken = Mutex<Int?>(nil)

    /// Listens to the store's events until ``close()``.
    public init(store: any JobStore) {
        signals = store.signals
        store.startBackgroundDuties()  // a shared store reads other processes' (and its own) events there
        let token = signals.addEventListener { [weak self] events in self?.publish(events) }
        listenerToken.withLock { $0 = token }
    }

    /// Stops listening and ends every subscription.
    public func close() {
        if let token = listenerToken.withLock({ $0 }) { signals.removeEventListener(token) }
        for subscription in subscribers.withLock({ Array($0.values) }) { subscription.cancel() }
    }

    /// Subscribes to the events that match `filter`. `buffer` is how far the subscriber may
    /// fall behind before it is closed.
    public func subscribe(_ filter: EventFilter, buffer: Int = 1000) -> Subscription {
        let holder = Mutex<ObjectIdentifier?>(nil)
        let subscription = Subscription(filter: filter, buffer: buffer) { [weak self] in
            if let key = holder.withLock({ $0 }) { self?.remove(key) }
        }
        let key = ObjectIdentifier(subscription)
        holder.withLock { $0 = key }
        subscribers.withLock { $0[key] = subscription }
        return subscription
    }

    public var subscriberCount: Int { subscribers.withLock { $0.count } }

    private func remove(_ key: ObjectIdentifier) {
        _ = subscribers.withLock { $0.removeValue(forKey: key) }
    }

    private func publish(_ events: [JobEvent]) {
        let current = subscribers.withLock { Array($0.values) }
        for subscription in current {
            let filter = subscription.filter.withLock { $0 }
            for event in events where filter.matches(event) {
                if subscription.pending.add(1, ordering: .relaxed).newValue > subscription.limit {
                    subscription.overflow.store(true, ordering: .relaxed)
                    subscription.cancel()
                    break
                }
                subscription.continuation.yield(event)
            }
        }
    }
}
