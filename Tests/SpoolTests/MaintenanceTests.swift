import Foundation
import SpoolCore
import SpoolPostgres
import Testing

/// Each maintenance duty on its own, on every store.
@Suite("Maintenance duties")
struct MaintenanceTests {
    @Test("the lease rescuer returns every expired lease in one run, in calls of LeaseRescue.batchLimit", arguments: StoreKind.allCases)
    func leaseRescuer(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let total = LeaseRescue.batchLimit * 2 + 5
            _ = try await store.enqueue((0..<total).map { _ in NewJob(queue: "q", kind: "k") }, defaults: [:], depthLimits: [:])
            #expect(try await store.leaseAll(limit: total, worker: "gone", lease: .milliseconds(200)).count == total)
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await LeaseRescuer(store: store).run() == total)
            #expect(try await LeaseRescuer(store: store).run() == 0)
            #expect(try await store.leaseAll(limit: total).count == total)
        }
    }

    @Test("the job pruner deletes completed and cancelled jobs past their retention, and failed ones past theirs", arguments: StoreKind.allCases)
    func jobPruner(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let done = try await store.add().job.id
            let dead = try await store.add(maxAttempts: 1).job.id
            let gone = try await store.add().job.id
            let leased = try await store.leaseAll()
            try await store.complete(done, lease: leased.first { $0.id == done }!.lease, result: nil)
            try await store.fail(dead, lease: leased.first { $0.id == dead }!.lease,
                                 error: AttemptError(attempt: 1, message: "x", at: Date()), retryAt: nil)
            _ = try await store.cancel(gone, tenant: nil)
            let pruner = JobPruner(store: store, settings: .init(completedRetention: .seconds(3600), failedRetention: .seconds(86_400)))
            #expect(try await pruner.run() == 0, "nothing is past its retention yet")
            #expect(try await pruner.run(now: Date().addingTimeInterval(7200)) == 2)
            #expect(try await store.job(done, tenant: nil) == nil)
            #expect(try await store.job(gone, tenant: nil) == nil)
            #expect(try await store.job(dead, tenant: nil) != nil, "dead letters are kept longer")
            #expect(try await pruner.run(now: Date().addingTimeInterval(2 * 86_400)) == 1)
            let keepAll = JobPruner(store: store, settings: .init(completedRetention: nil, failedRetention: nil))
            #expect(try await keepAll.run(now: Date().addingTimeInterval(1e8)) == 0)
        }
    }

    @Test("the event pruner deletes events past the window, and the store says from where they are gone", arguments: StoreKind.allCases)
    func eventPruner(kind: StoreKind) async throws {
        try await withStore(kind) { store in
            for _ in 0..<3 { try await store.add() }
            let last = try await store.lastEventSeq()
            let pruner = EventPruner(store: store, settings: .init(retention: .seconds(3600)))
            #expect(try await pruner.run() == 0)
            #expect(try await store.prunedEventSeq() == 0)
            #expect(try await pruner.run(now: Date().addingTimeInterval(7200)) == 3)
            #expect(try await store.prunedEventSeq() >= last)
            #expect(try await store.events(after: 0, filter: EventFilter(), limit: 10).isEmpty)
        }
    }

    @Test("leader election: one holder at a time, a resignation hands over at once, an expired claim is taken over",
          .enabled(if: PostgresTestDatabase.serverURL != nil || PostgresTestDatabase.required))
    func leaderElection() async throws {
        try await withStore(.postgres) { store in
            let a = LeaderElector(store: store, holder: "a", settings: .init(ttl: .seconds(2)))
            let b = LeaderElector(store: store, holder: "b", settings: .init(ttl: .seconds(2)))
            #expect(await a.elect() && a.isLeader)
            #expect(!(await b.elect()) && !b.isLeader)
            #expect(await a.elect(), "the holder renews")
            await a.resign()
            #expect(!a.isLeader)
            #expect(await b.elect(), "a resignation hands over at once")
            #expect(!(await a.elect()))
            // b stops renewing (as if killed): its claim expires, then a takes over.
            try await Task.sleep(for: .milliseconds(2500))
            #expect(await a.elect())
            #expect(!(await b.elect()))
        }
    }

    @Test("on a store one machine uses alone, everyone leads")
    func sqliteAlwaysLeads() async throws {
        try await withStore(.sqlite) { store in
            #expect(await LeaderElector(store: store, holder: "a", settings: .init(ttl: .seconds(1))).elect())
            #expect(await LeaderElector(store: store, holder: "b", settings: .init(ttl: .seconds(1))).elect())
        }
    }
}
