import Foundation
@testable import SpoolCore
import Synchronization
import Testing

/// A gate a test opens once: writes wait at it, so a test can pile items up behind a write.
private final class WriteGate: Sendable {
    private let open = Mutex(false)
    func pass() async {
        for _ in 0..<2000 where !open.withLock({ $0 }) { try? await Task.sleep(for: .milliseconds(5)) }
    }
    func release() { open.withLock { $0 = true } }
}

/// A write that records what it took and waits at `gate`: after taking with `.afterFinish`
/// (PostgreSQL takes, then writes), before taking with `.afterTake` (the SQLite writer thread
/// runs a write, and takes, only once the commit before it is done).
private func heldWrite(_ overlap: WriteBatcher<Int, Int>.Overlap, _ gate: WriteGate, _ log: Log,
                       answer: @escaping @Sendable ([Int]) throws -> [Result<Int, SpoolError>]) -> WriteBatcher<Int, Int>.Write {
    { take in
        if overlap == .afterTake { await gate.pass() }
        let items = take()
        log.record(items)
        if overlap == .afterFinish { await gate.pass() }
        return try answer(items)
    }
}

/// What the writes of a test saw.
private final class Log: Sendable {
    let batches = Mutex<[[Int]]>([])
    func record(_ items: [Int]) { batches.withLock { $0.append(items) } }
    var all: [[Int]] { batches.withLock { $0 } }
    var taken: Int { all.reduce(0) { $0 + $1.count } }
}

@Suite("WriteBatcher", .timeLimit(.minutes(2)))
struct WriteBatcherTests {
    @Test("items that arrive while a write runs go into the next write together", arguments: [WriteBatcher<Int, Int>.Overlap.afterFinish, .afterTake])
    func itemsArrivingTogetherShareAWrite(overlap: WriteBatcher<Int, Int>.Overlap) async throws {
        let batcher = WriteBatcher<Int, Int>(overlap: overlap, maxBatch: 50)
        let gate = WriteGate(), log = Log()
        batcher.write = heldWrite(overlap, gate, log) { items in items.map { .success($0 * 10) } }
        let first = Task { try await batcher.submit(0) }
        #expect(await eventually { batcher.waitingCount + log.taken == 1 })
        let rest = (1...120).map { n in Task { try await batcher.submit(n) } }
        #expect(await eventually { batcher.waitingCount + log.taken == 121 })
        gate.release()
        #expect(try await first.value == 0)
        for (n, task) in zip(1..., rest) { #expect(try await task.value == n * 10) }
        let batches = log.all
        #expect(batches.allSatisfy { $0.count <= 50 }, "a write took more than maxBatch")
        #expect(batches.flatMap { $0 }.sorted() == Array(0...120))
        #expect(batches.count <= 4, "120 items waiting together went into \(batches.count - 1) writes")
    }

    @Test("a write of several items that throws: each goes again alone, only the bad one fails", arguments: [WriteBatcher<Int, Int>.Overlap.afterFinish, .afterTake])
    func badItemFailsAlone(overlap: WriteBatcher<Int, Int>.Overlap) async throws {
        let batcher = WriteBatcher<Int, Int>(overlap: overlap)
        let gate = WriteGate(), log = Log()
        batcher.write = heldWrite(overlap, gate, log) { items in
            if items.contains(13) { throw SpoolError.invalid(field: "item", reason: "13 is refused") }
            return items.map { .success($0) }
        }
        // A first item, taken (or held) before the others arrive: they then pile up behind it
        // and go into one write together, whatever order their tasks start in.
        let sentinel = Task { try await batcher.submit(0) }
        #expect(await eventually { batcher.waitingCount + log.taken == 1 })
        let tasks = (10...16).map { n in Task { try await batcher.submit(n) } }
        #expect(await eventually { batcher.waitingCount + log.taken == 8 })
        gate.release()
        #expect(try await sentinel.value == 0)
        for (n, task) in zip(10..., tasks) {
            if n == 13 {
                await #expect(throws: SpoolError.self) { try await task.value }
            } else {
                #expect(try await task.value == n)
            }
        }
        #expect(log.all.contains { $0.count > 1 && $0.contains(13) }, "the test never wrote 13 with others: \(log.all)")
        #expect(log.all.contains([13]), "the bad item was not retried alone")
    }

    @Test("an unavailable store fails the whole write at once, without retrying each item")
    func unavailableFailsAll() async throws {
        let batcher = WriteBatcher<Int, Int>(overlap: .afterFinish)
        let gate = WriteGate(), log = Log()
        batcher.write = heldWrite(.afterFinish, gate, log) { _ in throw SpoolError.unavailable(reason: "the database is down") }
        let tasks = (1...5).map { n in Task { try await batcher.submit(n) } }
        #expect(await eventually { batcher.waitingCount + log.taken == 5 })
        gate.release()
        for task in tasks { await #expect(throws: SpoolError.self) { try await task.value } }
        // At most two writes: the first item's, and one for the four behind it.
        #expect(log.all.count <= 2 && log.taken == 5, "items were retried one by one: \(log.all)")
    }

    @Test("a write that fails before it takes its items fails them, and the batcher keeps working", arguments: [WriteBatcher<Int, Int>.Overlap.afterFinish, .afterTake])
    func failureBeforeTake(overlap: WriteBatcher<Int, Int>.Overlap) async throws {
        let batcher = WriteBatcher<Int, Int>(overlap: overlap)
        let broken = Mutex(true)
        batcher.write = { take in
            if broken.withLock({ $0 }) { throw SpoolError.unavailable(reason: "the store is closed") }
            return take().map { .success($0) }
        }
        await #expect(throws: SpoolError.self) { try await batcher.submit(1) }
        #expect(batcher.waitingCount == 0)
        broken.withLock { $0 = false }
        #expect(try await batcher.submit(2) == 2)
    }
}
