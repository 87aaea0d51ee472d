import Foundation
import SpoolCore
@testable import SpoolPostgres
import Testing

/// Leader election between real `spool worker` processes on one PostgreSQL database.
@Suite("Leader election between processes", .serialized, .timeLimit(.minutes(3)),
       .enabled(if: PostgresTestDatabase.serverURL != nil || PostgresTestDatabase.required))
struct LeaderProcessTests {
    /// The maintenance leader's worker id (while its claim runs), its claim's expiry and the
    /// database's clock, in seconds since 1970.
    static func leader(_ store: PostgresJobStore) async throws -> (holder: String, expires: Double, now: Double)? {
        try await store.autocommit { client in
            var found: (String, Double, Double)?
            for try await row in try await client.query("""
                SELECT holder, extract(epoch FROM expires_at)::float8, extract(epoch FROM clock_timestamp())::float8
                FROM spool_leaders WHERE duty = 'maintenance' AND expires_at > clock_timestamp()
                """, logger: store.logger).decode((String, Double, Double).self) { found = row }
            return found
        }
    }

    @Test("one holder at a time; after SIGKILL another takes over when the claim expires; after SIGTERM at once")
    func handover() async throws {
        try await PostgresTestDatabase.with { url in
            let dir = TempDir()
            defer { dir.remove() }
            let store = try PostgresJobStore(url: url)
            try await store.migrate()
            let args = ["worker", "--database", url, "--queues", "idle"]
            var workers = try (1...2).map { try SpoolProcess(args, logTo: dir.file("worker\($0).log")) }
            defer { for w in workers { w.signal(SIGKILL) } }
            func owner(_ holder: String) -> SpoolProcess? { workers.first { holder.contains(":\($0.process.processIdentifier):") } }

            var first: (holder: String, expires: Double, now: Double)?
            #expect(try await eventually(timeout: .seconds(30)) { first = try await Self.leader(store); return first != nil })
            let leader = try #require(first.flatMap { owner($0.holder) }, "no worker leads: \(String(describing: first))")
            // One holder, and it stays: nobody else claims while it renews.
            for _ in 0..<10 {
                try await Task.sleep(for: .milliseconds(500))
                #expect(try await Self.leader(store)?.holder == first?.holder)
            }

            // Killed: its claim runs out, then the other worker takes over.
            leader.signal(SIGKILL)
            #expect(await leader.waitForExit(timeout: .seconds(10)) != nil)
            var second: (holder: String, expires: Double, now: Double)?
            #expect(try await eventually(timeout: .seconds(40)) {
                second = try await Self.leader(store)
                return second.map { $0.holder != first?.holder } ?? false
            })
            let successor = try #require(second.flatMap { owner($0.holder) })
            #expect(successor !== leader)

            // Stopped gracefully: it resigns, and a new worker takes over before the old claim
            // would have expired.
            workers.append(try SpoolProcess(args, logTo: dir.file("worker3.log")))
            try await Task.sleep(for: .seconds(2))
            let claim = try #require(try await Self.leader(store))
            successor.signal(SIGTERM)
            var third: (holder: String, expires: Double, now: Double)?
            #expect(try await eventually(timeout: .seconds(40)) {
                third = try await Self.leader(store)
                return third.map { $0.holder != claim.holder } ?? false
            })
            let taken = try #require(third)
            #expect(owner(taken.holder) === workers[2])
            #expect(taken.now < claim.expires, "taken over at \(taken.now), the resigned claim ran until \(claim.expires)")
            #expect(await successor.waitForExit(timeout: .seconds(20)) == 0)
            try await store.close()
        }
    }
}
