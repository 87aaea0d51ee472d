import Foundation
import SpoolCore
import SpoolTesting
import Synchronization
import Testing

/// Handlers a user's program might have.
private struct Greet: JobHandler {
    struct Payload: Codable, Sendable { var name: String }
    static let kind = "test.greet"
    func run(_ payload: Payload, context: JobContext) async throws -> String {
        try await context.progress(50, "thinking")
        guard !payload.name.isEmpty else { throw JobFailure.nonRetryable("no name") }
        return "hello \(payload.name)"
    }
}

/// Signs a user up: enqueues the greeting (the code under test).
private func signUp(_ spool: Spool, name: String) async throws {
    _ = try await spool.enqueue(Greet.self, Greet.Payload(name: name))
}

@Suite("SpoolTesting", .timeLimit(.minutes(2)))
struct SpoolTestingTests {
    @Test("run: one handler on one payload gives its output or its error, through a real lease")
    func runOne() async throws {
        try await SpoolTestHarness.with { harness in
            #expect(try await harness.run(Greet(), .init(name: "ada")) == "hello ada")
            await #expect(throws: JobFailure.self) { try await harness.run(Greet(), .init(name: "")) }
            let jobs = try await harness.enqueued(kind: Greet.kind)
            #expect(jobs.map(\.state) == [.completed, .failed])
            #expect(jobs.first?.result == Data(#""hello ada""#.utf8) && jobs.first?.progress?.percent == 50)
        }
    }

    @Test("enqueued and drain: what the code under test enqueued, run in order with the jobs it enqueues, retries at once")
    func drainQueue() async throws {
        let flakyRuns = Mutex(0)
        try await SpoolTestHarness.with(configure: { $0.defaultQueue.maxAttempts = 3 }) { harness in
            harness.spool.register(Greet())
            harness.spool.register(kind: "test.chain", payload: Greet.Payload.self) { payload, _ in
                try await signUp(harness.spool, name: payload.name + " jr")
            }
            harness.spool.register(kind: "test.flaky", payload: NoResult.self) { _, _ in
                let n = flakyRuns.withLock { $0 += 1; return $0 }
                if n < 3 { throw CancellationError() }
            }
            try await signUp(harness.spool, name: "grace")
            _ = try await harness.spool.enqueue(try NewJob(kind: "test.chain", payload: Greet.Payload(name: "alan")))
            _ = try await harness.spool.enqueue(NewJob(kind: "test.flaky"))
            _ = try await harness.spool.enqueue(NewJob(kind: "test.nobody"))
            #expect(try await harness.enqueued().map(\.kind) == ["test.greet", "test.chain", "test.flaky", "test.nobody"])
            // Running one handler by hand leaves the queued jobs of its kind alone.
            #expect(try await harness.run(Greet(), .init(name: "by hand")) == "hello by hand")

            let finished = try await harness.drain()
            #expect(finished.map(\.kind) == ["test.greet", "test.chain", "test.greet", "test.flaky"])
            #expect(finished.allSatisfy { $0.state == .completed })
            let greetings = try await harness.enqueued(kind: Greet.kind, queue: "default").compactMap { $0.result.map { String(decoding: $0, as: UTF8.self) } }
            #expect(greetings == [#""hello grace""#, #""hello alan jr""#])
            #expect(finished.last?.attempt == 3 && flakyRuns.withLock { $0 } == 3)
            // A kind nobody handles is left for its worker.
            #expect(try await harness.enqueued(kind: "test.nobody").first?.state == .pending)
        }
    }
}
