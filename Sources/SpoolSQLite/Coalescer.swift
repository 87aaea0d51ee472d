import GRDB
import SpoolCore
import Synchronization

/// Merges many small writes of one kind into one write of the next group commit.
///
/// Requests that arrive while a commit is under way wait together; the writer then hands the
/// whole list to `body` at once, which can write them with one multi-row statement instead of
/// one statement each. `body` returns one result per item, in order.
final class Coalescer<Item: Sendable, Output: Sendable>: Sendable {
    typealias Body = @Sendable (Database, GroupCommitWriter.Batch, [Item]) throws -> [Result<Output, SpoolError>]

    private struct Waiting: Sendable {
        var item: Item
        var continuation: CheckedContinuation<Output, any Error>
    }

    private let writer: GroupCommitWriter
    private let durable: Bool
    private let body: Body
    private let waiting = Mutex<[Waiting]>([])

    init(writer: GroupCommitWriter, durable: Bool = true, body: @escaping Body) {
        self.writer = writer
        self.durable = durable
        self.body = body
    }

    func submit(_ item: Item) async throws -> Output {
        try await withCheckedThrowingContinuation { continuation in
            let first = waiting.withLock { list in
                list.append(Waiting(item: item, continuation: continuation))
                return list.count == 1
            }
            // The first request of a group queues one write; that write takes every request
            // that has arrived by the time the writer gets to it.
            if first { Task { await self.flush() } }
        }
    }

    /// What one flush took from `waiting`, to fail them if its transaction fails.
    private final class Taken: Sendable {
        let items = Mutex<[Waiting]?>(nil)
    }

    private func flush() async {
        let inFlight = Taken()
        do {
            // Several statements for a large group: a savepoint keeps the write all or nothing.
            let delivered = try await writer.write(durable: durable, atomic: false) { db, batch -> [(Waiting, Result<Output, SpoolError>)] in
                let taken = self.waiting.withLock { list in
                    defer { list.removeAll(keepingCapacity: true) }
                    return list
                }
                inFlight.items.withLock { $0 = taken }
                let results = try self.body(db, batch, taken.map(\.item))
                precondition(results.count == taken.count, "a coalesced write must answer every item")
                return Array(zip(taken, results))
            }
            for (waiting, result) in delivered { waiting.continuation.resume(with: result.mapError { $0 as any Error }) }
        } catch {
            // Nothing was written. Fail what the write took or, if it never ran, what waits.
            // The write took its items and failed with its transaction, or it never ran: then
            // the items still wait, and no other flush is coming for them.
            let failed = inFlight.items.withLock { $0 } ?? waiting.withLock { list in
                defer { list.removeAll() }
                return list
            }
            for waiting in failed { waiting.continuation.resume(throwing: error) }
        }
    }
}

/// Builds `(?, ?, ?), (?, ?, ?), ...` for a multi-row statement.
func placeholders(rows: Int, columns: Int) -> String {
    let row = "(" + Array(repeating: "?", count: columns).joined(separator: ", ") + ")"
    return Array(repeating: row, count: rows).joined(separator: ", ")
}
