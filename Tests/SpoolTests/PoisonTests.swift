import Foundation
import GRDB
import SpoolCore
import SpoolPostgres
import SpoolSQLite
import Synchronization
import Testing

/// One bad job, name, result or stored row must never hurt the others. Each test runs on
/// every store.
@Suite("Poison-proof stores")
struct PoisonTests {
    @Test("names are checked at the store itself, whoever calls it", arguments: StoreKind.allCases)
    func namesCheckedAtTheStore(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let bad: [NewJob] = [
                NewJob(queue: #"a"b"#, kind: "k"), NewJob(queue: "q", kind: "k\n"), NewJob(queue: "q", kind: "k", tenant: "t\"},{"),
                NewJob(queue: "", kind: "k"), NewJob(queue: String(repeating: "q", count: 65), kind: "k"),
            ]
            for job in bad {
                await expectSpoolError({ if case .invalid = $0 { true } else { false } }) {
                    _ = try await store.enqueue([NewJob(queue: "q", kind: "k"), job], defaults: [:], depthLimits: [:])
                }
                await expectSpoolError({ if case .invalid = $0 { true } else { false } }) {
                    _ = try await store.enqueue([job], defaults: [:], depthLimits: [:])
                }
            }
            let written = try await store.list(JobFilter(limit: 10)).jobs
            #expect(written.isEmpty, "nothing of a refused batch was written")
            for queue in ["a b", #"q""#, "", "w:x\u{0}"] {
                await expectSpoolError({ if case .invalid = $0 { true } else { false } }) { try await store.setPaused(true, queue: queue) }
                await expectSpoolError({ if case .invalid = $0 { true } else { false } }) { _ = try await store.purge(queue: queue, tenant: nil) }
                await expectSpoolError({ if case .invalid = $0 { true } else { false } }) { _ = try await store.retryFailed(queue: queue, tenant: nil) }
                await expectSpoolError({ if case .invalid = $0 { true } else { false } }) {
                    _ = try await store.lease(queue: queue, limit: 1, workerID: "w", leaseDuration: .seconds(5))
                }
            }
        }
    }

    @Test("a result that is not JSON, or too large, is refused for its job alone; the batch it shares completes", arguments: StoreKind.allCases)
    func poisonResultsFailAlone(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            for _ in 0..<7 { try await store.add() }
            let leased = try await store.leaseAll()
            #expect(leased.count == 7)
            let results: [Data] = [
                Data(#"{"ok":1}"#.utf8), Data("{not json".utf8), Data(#"{"ok":2}"#.utf8),
                Data([0x22, 0xFF, 0x22]), Data(repeating: 0x20, count: JobResult.maxBytes + 1), Data("[1,2,3]".utf8),
                Data([0xEF, 0xBB, 0xBF] + Array("{}".utf8)),
            ]
            // All at once, so that stores that batch completions put them in one batch.
            let outcomes = await withTaskGroup(of: (Int, Bool).self) { group in
                for (n, job) in leased.enumerated() {
                    group.addTask {
                        do { try await store.complete(job.id, lease: job.lease, result: results[n]); return (n, true) } catch SpoolError.invalid(field: "result", _) {
                            return (n, false)
                        } catch { Issue.record("completion \(n) failed with \(error)"); return (n, false) }
                    }
                }
                var outcomes: [Int: Bool] = [:]
                for await (n, ok) in group { outcomes[n] = ok }
                return outcomes
            }
            #expect(outcomes == [0: true, 1: false, 2: true, 3: false, 4: false, 5: true, 6: false])
            for (n, job) in leased.enumerated() {
                let state = try await store.mustGet(job.id).state
                #expect(state == (outcomes[n] == true ? .completed : .processing), "job \(n)")
            }
            // The event log stays readable: every completion is there.
            let events = try await store.events(after: 0, filter: EventFilter(), limit: 1000)
            #expect(events.filter { $0.state == .completed }.count == 3)
        }
    }

    @Test("a handler that returns a result that is not JSON fails that job for good with a clear error; others complete", arguments: StoreKind.allCases)
    func handlerPoisonResult(kind: StoreKind) async throws {
        try await withEngine(on: kind, register: { spool in
            spool.register(AnyJobHandler(kind: "raw") { payload, _ in payload == Data("1".utf8) ? Data("{oops".utf8) : Data("{}".utf8) })
        }) { spool, _ in
            let bad = try await spool.enqueue(NewJob(kind: "raw", payload: Data("1".utf8), maxAttempts: 5)).job.id
            let good = try await spool.enqueue(NewJob(kind: "raw", payload: Data("2".utf8))).job.id
            let failed = try await spool.waitUntilFinished(bad)
            #expect(failed.state == .failed && failed.attempt == 1, "not retried: \(failed.state) after \(failed.attempt)")
            #expect(failed.errors.first?.message.contains("not valid JSON") == true, "\(failed.errors)")
            #expect(failed.errors.first?.reason == "non_retryable")
            #expect(try await spool.waitUntilFinished(good).state == .completed)
        }
    }

    @Test("an undecodable event-log row is skipped; the events around it are read", arguments: StoreKind.allCases)
    func undecodableEventRowSkipped(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let live = Mutex<[JobEvent]>([])
            store.signals.addEventListener { events in live.withLock { $0 += events } }
            let first = try await store.add().job.id
            try await insertRawEventRows(store, ["this is not JSON", #"[{"j":"nope"},{"also":"bad"}]"#])
            let second = try await store.add().job.id
            let third = try await store.add().job.id
            let replayed = try await store.events(after: 0, filter: EventFilter(), limit: 100)
            #expect(replayed.map(\.jobID) == [first, second, third])
            // A store shared between processes also feeds its live subscribers from the log.
            #expect(await eventually { live.withLock { Set($0.map(\.jobID)) }.isSuperset(of: [second, third]) })
            #expect(try await store.lastEventSeq() > 0)
        }
    }
}

/// Writes event-log rows as they are, past the store (a damaged or foreign writer).
func insertRawEventRows(_ store: any JobStore, _ texts: [String]) async throws {
    switch store {
    case let sqlite as SQLiteJobStore:
        let queue = try DatabaseQueue(path: sqlite.path)
        try await queue.write { db in
            for text in texts { try db.execute(sql: "INSERT INTO event_log (count, at, events) VALUES (1, 0, ?)", arguments: [text]) }
        }
        try queue.close()
    case let postgres as PostgresJobStore:
        for text in texts {
            let quoted = "'" + text.replacingOccurrences(of: "'", with: "''") + "'"
            try await postgres.execute("INSERT INTO spool_event_log (count, at, events) VALUES (1, now(), \(quoted))")
        }
    default:
        Issue.record("no raw access to \(type(of: store))")
    }
}

/// Behaviours the two stores once did differently, pinned on both.
@Suite("Store rules kept alike")
struct StoreRulesTests {
    @Test("a rescue call returns at most LeaseRescue.batchLimit jobs, with the rule's error", arguments: StoreKind.allCases)
    func rescueIsBounded(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let total = LeaseRescue.batchLimit + 1
            _ = try await store.enqueue((0..<total).map { _ in NewJob(queue: "q", kind: "k", maxAttempts: 3) }, defaults: [:], depthLimits: [:])
            let leased = try await store.leaseAll(limit: total, worker: "w-gone", lease: .milliseconds(200))
            #expect(leased.count == total)
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await store.rescueExpiredLeases() == LeaseRescue.batchLimit)
            #expect(try await store.rescueExpiredLeases() == 1)
            #expect(try await store.rescueExpiredLeases() == 0)
            let job = try await store.mustGet(leased[0].id)
            #expect(job.state == .pending)
            #expect(job.errors.first?.message == LeaseRescue.error(attempt: 1, worker: "w-gone", at: Date()).message)
            #expect(job.errors.first?.reason == LeaseRescue.reason)
        }
    }

    @Test("a paused queue hands out nothing, but its due scheduled jobs become pending", arguments: StoreKind.allCases)
    func pausedQueuePromotes(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let due = try await store.add(runAt: Date().addingTimeInterval(0.2)).job.id
            #expect(try await store.mustGet(due).state == .scheduled)
            try await store.setPaused(true, queue: "q")
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await store.leaseAll().isEmpty)
            #expect(try await store.mustGet(due).state == .pending)
            try await store.setPaused(false, queue: "q")
            #expect(try await store.leaseAll().map(\.id) == [due])
        }
    }
}

@Suite("Event log paging")
struct EventPagingTests {
    @Test("paging through the event log reaches its end, however many rows, from the end of a row too", arguments: StoreKind.allCases)
    func pagesReachTheEnd(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let before = try await store.lastEventSeq()
            var ids: [JobID] = []
            for _ in 0..<1200 { ids.append(try await store.add().job.id) }  // one transaction, one row, each
            func readAll(after: Int64) async throws -> [JobEvent] {
                var events: [JobEvent] = []
                var position = after
                for _ in 0..<100 {
                    let page = try await store.eventPage(after: position, filter: EventFilter(), limit: 1000)
                    events += page.events
                    position = page.next
                    if page.atEnd { return events }
                }
                Issue.record("the log never ended")
                return events
            }
            let all = try await readAll(after: before)
            #expect(all.map(\.jobID) == ids)
            // Resuming at the last event of a row (as a client that saw it does).
            let resumed = try await readAll(after: all[99].seq)
            #expect(resumed.map(\.jobID) == Array(ids.dropFirst(100)))
        }
    }
}
