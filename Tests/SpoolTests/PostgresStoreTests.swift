import Foundation
import SpoolCore
@testable import SpoolPostgres
import Synchronization
import Testing

/// What only the PostgreSQL store has to get right (the contract suite covers the rest).
@Suite("PostgreSQL store", .enabled(if: PostgresTestDatabase.serverURL != nil || PostgresTestDatabase.required))
struct PostgresStoreTests {
    @Test("a statement whose preparation failed (it timed out behind another session's lock) works again once the lock is gone")
    func failedPreparationRecovers() async throws {
        try await PostgresTestDatabase.with { url in
            let admin = try PostgresJobStore(url: url)
            try await admin.migrate()
            // One connection for statements (and one for LISTEN), so that the connection that
            // saw the failed preparation is the one used afterwards; a short deadline.
            var options = PostgresJobStore.Options()
            options.maxConnections = 1
            options.operationTimeout = .seconds(2)
            let store = try PostgresJobStore(url: url, options: options)
            do {
                try await store.migrate()
                // Another session holds spool_jobs exclusively (as a migration would) for 3 s:
                // the first enqueue's preparation waits for it and times out.
                let holder = Task {
                    try await admin.execute("DO $$ BEGIN LOCK TABLE spool_jobs IN ACCESS EXCLUSIVE MODE; PERFORM pg_sleep(3); END $$")
                }
                try await Task.sleep(for: .milliseconds(300))
                await #expect(throws: SpoolError.self) { _ = try await store.add() }
                try await holder.value
                // The lock is gone: enqueues, leases and completions work on that connection.
                let ids = [try await store.add().job.id, try await store.add().job.id]
                // (The call that failed may still have been enqueued once the lock was gone: its
                // caller was told "unavailable", not "refused", and retries with a key.)
                let leased = try await store.leaseAll()
                #expect(Set(ids).isSubset(of: Set(leased.map(\.id))))
                for job in leased { try await store.complete(job.id, lease: job.lease, result: nil) }
                for job in leased { #expect(try await store.mustGet(job.id).state == .completed) }
                try await store.close()
                try await admin.close()
            } catch {
                try? await store.close()
                try? await admin.close()
                throw error
            }
        }
    }

    @Test("a transaction that took its event seq long before committing still reaches live subscribers (no gap timeout)")
    func slowCommitIsNotSkipped() async throws {
        try await PostgresTestDatabase.with { url in
            var options = PostgresJobStore.Options()
            options.operationTimeout = .seconds(20)
            options.eventPollInterval = .milliseconds(200)
            let store = try PostgresJobStore(url: url, options: options)
            do {
                try await store.migrate()
                store.startBackgroundDuties()
                let live = Mutex<[JobEvent]>([])
                store.signals.addEventListener { events in live.withLock { $0 += events } }
                let slowJob = JobID.make()
                let event = JobEvent(seq: 0, type: .state, jobID: slowJob, tenant: "default", queue: "q", kind: "k",
                                     state: .pending, attempt: 0, progress: nil, error: nil, result: nil, at: Date())
                // Takes its event-log seq, then waits 7 s before committing, while others commit after it.
                let slow = Task {
                    try await store.transaction { connection, _ in
                        try await connection.query(
                            "INSERT INTO spool_event_log (count, at, events) VALUES (1, clock_timestamp(), \(EventLogFormat.encode([event][...])))",
                            logger: store.logger)
                        try await Task.sleep(for: .seconds(7))
                    }
                }
                try await Task.sleep(for: .milliseconds(500))
                var later: [JobID] = []
                for _ in 0..<5 { later.append(try await store.add().job.id) }
                #expect(await eventually(timeout: .seconds(3)) { live.withLock { Set($0.map(\.jobID)) }.isSuperset(of: Set(later)) } == false,
                        "events after the open transaction's seq waited for it")
                try await slow.value
                #expect(await eventually(timeout: .seconds(10)) {
                    live.withLock { Set($0.map(\.jobID)) }.isSuperset(of: Set(later + [slowJob]))
                }, "the slow transaction's event and everything after it arrived")
                let order = live.withLock { $0.map(\.jobID) }
                #expect(order.firstIndex(of: slowJob).map { $0 < (order.firstIndex(of: later[0]) ?? 0) } == true, "in seq order")
                // A rolled-back seq is stepped over once it is known to be final.
                _ = try? await store.transaction { connection, _ in
                    try await connection.query("INSERT INTO spool_event_log (count, at, events) VALUES (1, clock_timestamp(), '[]')", logger: store.logger)
                    throw CancellationError()
                }
                let afterRollback = try await store.add().job.id
                #expect(await eventually(timeout: .seconds(10)) { live.withLock { $0.contains { $0.jobID == afterRollback } } })
                try await store.close()
            } catch {
                try? await store.close()
                throw error
            }
        }
    }

    @Test("a transaction past its deadline is rolled back and its connection closed: it cannot commit after its caller was told it failed")
    func abandonedTransactionCannotCommit() async throws {
        try await PostgresTestDatabase.with { url in
            var options = PostgresJobStore.Options()
            options.maxConnections = 2
            options.operationTimeout = .seconds(3)
            // The schema is made with the default deadline (a loaded machine may take longer than 3 s).
            let migrator = try PostgresJobStore(url: url)
            try await migrator.migrate()
            try await migrator.close()
            let store = try PostgresJobStore(url: url, options: options)
            do {
                try await store.execute("CREATE TABLE marker (x int)")
                let started = ContinuousClock.now
                await #expect(throws: SpoolError.self) {
                    try await store.transaction { connection, _ in
                        try await connection.query("INSERT INTO marker VALUES (1)", logger: store.logger)
                        // Busy, never idle long enough for the server's own timeouts: 20 x 0.5 s.
                        for _ in 0..<20 { try await connection.query("SELECT pg_sleep(0.5)", logger: store.logger) }
                    }
                }
                #expect(ContinuousClock.now - started < .seconds(8), "the caller was answered at the deadline, not when the work ended")
                try await Task.sleep(until: started + .seconds(11))  // past when the work would have committed
                let probe = try PostgresJobStore(url: url)
                let rows = try await probe.autocommit { client in
                    var n = 0
                    for try await count in try await client.query("SELECT count(*)::int8 FROM marker", logger: probe.logger).decode(Int64.self) { n = Int(count) }
                    return n
                }
                try await probe.close()
                #expect(rows == 0, "the abandoned transaction committed after its deadline")
                // The pool still works.
                let id = try await store.add().job.id
                #expect(try await store.mustGet(id).state == .pending)
                try await store.close()
            } catch {
                try? await store.close()
                throw error
            }
        }
    }
}
