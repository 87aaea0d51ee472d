import Foundation
import SpoolCore
import Logging
import SpoolPostgres
import SpoolSQLite
import Testing

/// The stores the contract suite runs against.
///
/// PostgreSQL runs when `SPOOL_TEST_POSTGRES_URL` names a server (`.ci/run` starts one); without
/// it the PostgreSQL cases are left out locally, but under `CI=true` they run and fail.
enum StoreKind: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite
    case postgres
    var testDescription: String { rawValue }

    static var allCases: [StoreKind] {
        PostgresTestDatabase.serverURL != nil || PostgresTestDatabase.required ? [.sqlite, .postgres] : [.sqlite]
    }
}

/// Fresh databases on the test PostgreSQL server, one per test.
enum PostgresTestDatabase {
    static var serverURL: String? { ProcessInfo.processInfo.environment["SPOOL_TEST_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 } }
    static var required: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    struct NotConfigured: Error, CustomStringConvertible {
        var description: String { "SPOOL_TEST_POSTGRES_URL is not set, and CI=true requires the PostgreSQL tests to run (.ci/run starts a server)" }
    }

    /// Creates an empty database, runs `body` with its URL, and drops it.
    static func with<T>(_ body: (String) async throws -> T) async throws -> T {
        guard let server = serverURL else { throw NotConfigured() }
        return try await PostgresJobStore.withScratchDatabase(on: server, prefix: "spool_test_", body)
    }
}

/// A fresh directory under the system temp dir, removed by `remove()`.
struct TempDir {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "spool-test-" + UUID().uuidString.prefix(8).lowercased()
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func file(_ name: String) -> String { path + "/" + name }
    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Runs `body` with a new, migrated, empty store of `kind`.
func withStore<T>(_ kind: StoreKind, _ body: (any JobStore) async throws -> T) async throws -> T {
    _ = testMetrics  // metrics handles made before the bootstrap would stay no-ops for good
    switch kind {
    case .postgres:
        return try await PostgresTestDatabase.with { url in
            try await migratedThenClosed(try PostgresJobStore(url: url), body)
        }
    case .sqlite:
        let dir = TempDir()
        defer { dir.remove() }
        return try await migratedThenClosed(try SQLiteJobStore(path: dir.file("spool.sqlite")), body)
    }
}

/// Migrates `store`, runs `body` with it, and closes it whatever `body` does.
private func migratedThenClosed<T>(_ store: any JobStore, _ body: (any JobStore) async throws -> T) async throws -> T {
    do {
        try await store.migrate()
        store.startBackgroundDuties()
        let result = try await body(store)
        try await store.close()
        return result
    } catch {
        try? await store.close()
        throw error
    }
}

let testDefaults: [String: JobDefaults] = [:]

extension JobStore {
    /// Enqueues one job with test defaults (3 attempts, 60 s timeout).
    @discardableResult
    func add(
        queue: String = "q", kind: String = "k", payload: String = "{}", priority: Int = 0, runAt: Date? = nil,
        key: String? = nil, tenant: String = NewJob.defaultTenant, maxAttempts: Int? = nil, depthLimit: Int? = nil
    ) async throws -> EnqueueResult {
        let job = NewJob(queue: queue, kind: kind, payload: Data(payload.utf8), priority: priority, runAt: runAt,
                         maxAttempts: maxAttempts, idempotencyKey: key, tenant: tenant)
        return try await enqueue(
            [job], defaults: [queue: JobDefaults(maxAttempts: 3, timeout: .seconds(60))],
            depthLimits: depthLimit.map { [queue: $0] } ?? [:])[0]
    }

    /// Leases up to `limit` jobs, in calls of at most 1,000 (a lease's own limit).
    func leaseAll(queue: String = "q", limit: Int = 100, worker: String = "w1", lease: Duration = .seconds(30)) async throws -> [LeasedJob] {
        var leased: [LeasedJob] = []
        while leased.count < limit {
            let batch = try await self.lease(queue: queue, limit: min(1000, limit - leased.count), workerID: worker, leaseDuration: lease).jobs
            leased += batch
            if batch.isEmpty { break }
        }
        return leased
    }

    func mustGet(_ id: JobID) async throws -> Job {
        try #require(try await job(id, tenant: nil))
    }
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes; returns whether it held.
func eventually(timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return try await condition()
}

/// Expects `body` to throw a `SpoolError` matching `matches`.
func expectSpoolError(_ matches: (SpoolError) -> Bool, sourceLocation: SourceLocation = #_sourceLocation, _ body: () async throws -> Void) async {
    do {
        try await body()
        Issue.record("expected a SpoolError, got success", sourceLocation: sourceLocation)
    } catch let error as SpoolError {
        #expect(matches(error), "unexpected error \(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected a SpoolError, got \(error)", sourceLocation: sourceLocation)
    }
}
