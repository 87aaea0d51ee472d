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

    /// Counts of the events that match a filter, taken by the reader when it wants them (a
    /// page that only needs to know what changed): no stream, no task per event.
    public final class Tally: Sendable {
        /// What happened since the last ``take()``.
        public struct Counts: Sendable {
            public var events = 0
            /// The `seq` of the last event counted.
            public var lastSeq: Int64 = 0
            /// Queue → the state entered (or the event's type: `progress`, `deleted`) → events.
            public var queues: [String: [String: Int]] = [:]
        }

        fileprivate let filter: EventFilter
        private let counts = Mutex(Counts())
        private let onEnd: @Sendable () -> Void

        fileprivate init(filter: EventFilter, onEnd: @escaping @Sendable () -> Void) {
            self.filter = filter
            self.onEnd = onEnd
        }

        fileprivate func count(_ events: [JobEvent]) {
            counts.withLock { counts in
                for event in events where filter.matches(event) {
                    counts.events += 1
                    counts.lastSeq = max(counts.lastSeq, event.seq)
                    counts.queues[event.queue, default: [:]][event.state?.rawValue ?? event.type.rawValue, default: 0] += 1
                }
            }
        }

        /// The counts since the last call (they start again from zero).
        public func take() -> Counts {
            counts.withLock { counts in
                defer { counts = Counts(lastSeq: counts.lastSeq) }
                return counts
            }
        }

        /// Stops counting.
        public func cancel() { onEnd() }
    }

    private let tallies = Mutex<[ObjectIdentifier: Tally]>([:])

    /// Counts the events that match `filter` until ``Tally/cancel()``.
    public func tally(_ filter: EventFilter) -> Tally {
        let holder = Mutex<ObjectIdentifier?>(nil)
        let tally = Tally(filter: filter) { [weak self] in
            if let key = holder.withLock({ $0 }) { _ = self?.tallies.withLock { $0.removeValue(forKey: key) } }
        }
        let key = ObjectIdentifier(tally)
        holder.withLock { $0 = key }
        tallies.withLock { $0[key] = tally }
        return tally
    }

    private func publish(_ events: [JobEvent]) {
        for tally in tallies.withLock({ Array($0.values) }) { tally.count(events) }
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
