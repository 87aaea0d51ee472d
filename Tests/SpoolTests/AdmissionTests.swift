import Foundation
import SpoolCore
import SpoolSQLite
import Testing

/// Which jobs a deployment takes (``JobAdmission``), from Swift: the same rules the CLI and
/// the gateway apply.
@Suite("Job admission")
struct AdmissionTests {
    @Test("a deployment that knows no kind takes any; once a worker in the registry announces its kinds, others are refused (within a second, no restart); a queue's list wins; unknown queues and reserved names are refused and nothing is written", arguments: StoreKind.allCases)
    func rules(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            var config = fastConfiguration()
            config.admission.enforced = true
            config.admission.kinds["strict"] = ["strict.only"]
            config.queues["mail"] = QueueConfiguration()
            config.queues["other"] = QueueConfiguration()
            let spool = Spool(store: store, configuration: config)
            func refusal(_ job: NewJob) async throws -> String? {
                do { _ = try await spool.enqueue(job) } catch let error as SpoolError { return error.description }
                return nil
            }
            // Nothing known yet (an API-only gateway before its workers start): any kind.
            #expect(try await refusal(NewJob(kind: "anything.at.all")) == nil)

            // A worker process starts elsewhere and announces what it runs.
            let now = Date()
            try await store.recordWorker(WorkerInfo(id: "w1", name: "spool worker", queues: ["default", "mail"], kinds: ["mail.send"],
                                                    concurrency: 1, startedAt: now, lastSeenAt: now, expiresAt: now.addingTimeInterval(60)))
            try await Task.sleep(for: .milliseconds(1100))  // past the one-second reread of the registry
            let typo = try await refusal(NewJob(queue: "mail", kind: "mail.sned"))
            #expect(typo?.contains("unknown kind 'mail.sned'") == true && typo?.contains("mail.send") == true, "\(typo ?? "accepted")")
            #expect(try await refusal(NewJob(queue: "mail", kind: "mail.send")) == nil)
            // Per queue: a configured queue no worker announced kinds for still takes any kind.
            #expect(try await refusal(NewJob(queue: "other", kind: "whatever")) == nil)
            // A queue no config names but a worker works is known.
            try await store.recordWorker(WorkerInfo(id: "w2", name: "spool worker", queues: ["images"], kinds: ["image.resize"],
                                                    concurrency: 1, startedAt: now, lastSeenAt: now, expiresAt: now.addingTimeInterval(60)))
            try await Task.sleep(for: .milliseconds(1100))
            #expect(try await refusal(NewJob(queue: "images", kind: "image.resize")) == nil)

            #expect(try await refusal(NewJob(queue: "strict", kind: "mail.send"))?.contains("for queue 'strict'") == true)
            #expect(try await refusal(NewJob(queue: "strict", kind: "strict.only")) == nil)
            #expect(try await refusal(NewJob(queue: "nope", kind: "mail.send"))?.contains("unknown queue 'nope'") == true)
            #expect(try await refusal(NewJob(queue: Webhook.queue, kind: "mail.send"))?.contains("reserved") == true)
            // A batch with one bad job writes none of them.
            let before = try await store.list(JobFilter(limit: 100)).jobs.count
            await #expect(throws: SpoolError.self) {
                try await spool.enqueue([NewJob(queue: "mail", kind: "mail.send"), NewJob(queue: "mail", kind: "nope")])
            }
            #expect(try await store.list(JobFilter(limit: 100)).jobs.count == before)

            // The queue overview says what each queue takes.
            let overview = try await spool.queueOverview()
            #expect(overview.first { $0.name == "strict" }?.kinds == ["strict.only"])
            #expect(overview.first { $0.name == "mail" }?.kinds == ["mail.send"])
        }
    }

    @Test("the first enqueues of a new process, all at once, wait for the first read of the registry: none is refused for a kind only a worker elsewhere runs")
    func firstBurst() async throws {
        try await withStore(.sqlite) { store in
            let now = Date()
            try await store.recordWorker(WorkerInfo(id: "elsewhere", name: "spool worker", queues: ["default"], kinds: ["remote.kind"],
                                                    concurrency: 1, startedAt: now, lastSeenAt: now, expiresAt: now.addingTimeInterval(60)))
            var config = fastConfiguration()
            config.admission.enforced = true
            let spool = Spool(store: store, configuration: config)
            spool.register(kind: "own.kind", payload: [String: Int].self) { _, _ in }  // the queue's kinds are known: strict
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<20 { group.addTask { _ = try await spool.enqueue(NewJob(kind: "remote.kind")) } }
                try await group.waitForAll()
            }
            await #expect(throws: SpoolError.self) { try await spool.enqueue(NewJob(kind: "nobody.runs.this")) }
        }
    }

    @Test("a Spool made in Swift without enforced admission takes any queue and kind (its workers may run elsewhere); admit() still answers")
    func notEnforced() async throws {
        try await withStore(.sqlite) { store in
            let spool = Spool(store: store, configuration: fastConfiguration())
            spool.register(kind: "known", payload: [String: Int].self) { _, _ in }
            _ = try await spool.enqueue(NewJob(queue: "anywhere", kind: "unknown"))
            await #expect(throws: SpoolError.self) { try await spool.admit(NewJob(queue: "default", kind: "unknown")) }
            try await spool.admit(NewJob(queue: "default", kind: "known"))
        }
    }
}
