import Synchronization

/// Merges single writes that arrive together (enqueues, completions) into one write of many
/// items: one statement and one commit instead of one each. Both stores use it.
///
/// The first item of a group starts a flush; items that arrive while a flush runs go into the
/// next one. A flush calls the store's ``Write`` with a `take` function and the write takes the
/// waiting items when it is ready to write them, so that items that arrive while it waits for
/// its turn (a SQLite writer thread, a PostgreSQL connection) still go in. The write answers one
/// result per item, in order.
///
/// One bad item must not fail its neighbours: when a write of several items throws anything but
/// ``SpoolError/unavailable(reason:)``, each item is written again on its own and only the bad
/// one fails.
public final class WriteBatcher<Item: Sendable, Output: Sendable>: @unchecked Sendable {
    /// Hands the write the items waiting now (at most `maxBatch`); call it once per write.
    public typealias Take = @Sendable () -> [Item]
    /// Writes what `take` hands over and answers each item, in order.
    public typealias Write = @Sendable (_ take: @escaping Take) async throws -> [Result<Output, SpoolError>]

    /// When the next flush may start.
    public enum Overlap: Sendable {
        /// Once the previous flush has finished: one write in flight at a time, so the items of
        /// a busy period go into as few transactions as possible (PostgreSQL, where each flush
        /// holds a connection).
        case afterFinish
        /// As soon as the previous flush has taken its items (SQLite: the writer thread orders
        /// the writes anyway, and the next one waits in its queue while a commit runs).
        case afterTake
    }

    private struct Waiting: Sendable {
        var item: Item
        var continuation: CheckedContinuation<Output, any Error>
    }

    private struct State {
        var waiting: [Waiting] = []
        var flushing = false
    }

    /// What one flush took, so that a failed write fails exactly those.
    private final class Taken: Sendable {
        let items = Mutex<[Waiting]?>(nil)
    }

    private let state = Mutex(State())
    private let overlap: Overlap
    /// The most items one write takes.
    public let maxBatch: Int
    /// The store's write. Set once, before the first ``submit(_:)`` (a store sets it from its
    /// own init, where the closure may capture the store).
    public var write: Write = { _ in [] }

    public init(overlap: Overlap, maxBatch: Int = 1000) {
        self.overlap = overlap
        self.maxBatch = maxBatch
    }

    /// Items waiting for a write (for tests).
    var waitingCount: Int { state.withLock { $0.waiting.count } }

    /// Adds `item` to the next write and returns its result once that write has committed.
    public func submit(_ item: Item) async throws -> Output {
        try await withCheckedThrowingContinuation { continuation in
            let start = state.withLock { s -> Bool in
                s.waiting.append(Waiting(item: item, continuation: continuation))
                if s.flushing { return false }
                s.flushing = true
                return true
            }
            if start { Task { await self.flush() } }
        }
    }

    /// Takes up to `maxBatch` waiting items for one write.
    private func take(into taken: Taken) -> [Waiting] {
        let (items, startNext) = state.withLock { s -> ([Waiting], Bool) in
            let n = min(s.waiting.count, maxBatch)
            let items = Array(s.waiting.prefix(n))
            s.waiting.removeFirst(n)
            guard overlap == .afterTake else { return (items, false) }
            // The flush that took is done with the list: the next item starts another.
            s.flushing = !s.waiting.isEmpty
            return (items, s.flushing)
        }
        taken.items.withLock { $0 = items }
        if startNext { Task { await self.flush() } }
        return items
    }

    private func flush() async {
        while true {
            let taken = Taken()
            do {
                let results = try await write { self.take(into: taken).map(\.item) }
                let items = taken.items.withLock { $0 } ?? []
                precondition(results.count == items.count, "a batched write must answer every item it took")
                for (waiting, result) in zip(items, results) { waiting.continuation.resume(with: result.mapError { $0 as any Error }) }
            } catch {
                // A write that failed before it took anything leaves its items waiting, and no
                // other flush is coming for them: they fail with it.
                let items = taken.items.withLock { $0 } ?? take(into: taken)
                await fail(items, error)
            }
            guard overlap == .afterFinish else { return }
            let more = state.withLock { s -> Bool in
                if s.waiting.isEmpty { s.flushing = false }
                return s.flushing
            }
            if !more { return }
        }
    }

    private func fail(_ items: [Waiting], _ error: any Error) async {
        guard items.count > 1, !Self.isUnavailable(error) else {
            for waiting in items { waiting.continuation.resume(throwing: error) }
            return
        }
        // One bad item (a value the database refuses) must not fail the others.
        for waiting in items {
            do {
                let result = try await write { [waiting.item] }
                waiting.continuation.resume(with: result[0].mapError { $0 as any Error })
            } catch {
                waiting.continuation.resume(throwing: error)
            }
        }
    }

    static func isUnavailable(_ error: any Error) -> Bool {
        if case SpoolError.unavailable = error { return true }
        return error is CancellationError
    }
}
