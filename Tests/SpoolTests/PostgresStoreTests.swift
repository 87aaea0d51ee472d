import Foundation
import SpoolCore
import SpoolPostgres
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
}
