// A minimal program that embeds Spool: one job kind, one enqueue, workers until it is done.
// Run it with `swift run HelloSpool`.
import Foundation
import Logging
import ServiceLifecycle
import SpoolCore
import SpoolSQLite

/// A job kind: a Codable payload, an async handler, a Codable result.
struct RenderReport: JobHandler {
    struct Payload: Codable, Sendable { var reportID: Int }
    struct Output: Codable, Sendable { var url: String }
    static let kind = "report.render"

    func run(_ payload: Payload, context: JobContext) async throws -> Output {
        for page in 1...10 {
            try await Task.sleep(for: .milliseconds(100))  // the slow work; throws if cancelled
            try await context.progress(Double(page) * 10, "page \(page) of 10")
        }
        guard payload.reportID > 0 else {
            throw JobFailure.nonRetryable("no such report")
        }
        return Output(url: "https://files.example.com/\(payload.reportID).pdf")
    }
}

let path = NSTemporaryDirectory() + "hello-spool.sqlite"
let store = try SQLiteJobStore(path: path)
try await store.migrate()

var config = EngineConfiguration()
config.queues["reports"] = QueueConfiguration(concurrency: 4, timeout: .seconds(60), maxAttempts: 3)
let spool = Spool(store: store, configuration: config)
spool.register(RenderReport())

let job = try await spool.enqueue(RenderReport.self, RenderReport.Payload(reportID: 42), queue: "reports")
print("enqueued \(job.id) (\(job.state.rawValue))")

// Run the workers as a service; stop them once the job is done.
let worker = spool.worker(queues: ["reports"])
let group = ServiceGroup(configuration: .init(
    services: [worker], gracefulShutdownSignals: [.sigterm, .sigint], logger: Logger(label: "hello")))
async let running: Void = group.run()

let done = try await spool.waitUntilFinished(job.id)
let result = done.result.map { String(decoding: $0, as: UTF8.self) } ?? "none"
print("job \(done.id): \(done.state.rawValue) after \(done.attempt) attempt(s); result \(result)")
await group.triggerGracefulShutdown()
try await running
try await store.close()
