import Foundation
import SpoolCore

/// Job kinds for the quick start, the tests and the benchmark. They do nothing useful:
/// register them only to try Spool out.
public enum DemoJobs {
    /// Every demo kind (for a ``Spool`` or a remote worker).
    public static var handlers: [AnyJobHandler] {
        [AnyJobHandler(DemoSleep()), AnyJobHandler(DemoFlaky()), AnyJobHandler(DemoNoop())]
    }

    /// Registers every demo kind on `spool`.
    public static func register(on spool: Spool) {
        for handler in handlers { spool.register(handler) }
    }
}

/// `demo.sleep`: sleeps `seconds`, reporting progress `steps` times on the way.
/// Payload: `{"seconds": 5, "steps": 10}`. Result: `{"slept_seconds": 5, "attempt": 1, "worker": "host:pid"}`.
///
/// Nothing in the payload names a file, command or address. When the process was started with
/// the environment variable ``recordRunsVariable`` set to a path (the multi-process tests do),
/// every run first appends `<job id> <attempt> <worker>` to that file.
public struct DemoSleep: JobHandler {
    public static let kind = "demo.sleep"
    /// `SPOOL_DEMO_RECORD_RUNS`: where runs are recorded; set only by whoever starts the process.
    public static let recordRunsVariable = "SPOOL_DEMO_RECORD_RUNS"
    public struct Payload: Codable, Sendable {
        public var seconds: Double
        public var steps: Int?
        public init(seconds: Double, steps: Int? = nil) { self.seconds = seconds; self.steps = steps }
    }
    public struct Output: Codable, Sendable {
        public var slept_seconds: Double
        /// The attempt and the worker that produced this result.
        public var attempt: Int
        public var worker: String
    }
    private let recordPath: String?
    public init() {
        recordPath = ProcessInfo.processInfo.environment[Self.recordRunsVariable].flatMap { $0.isEmpty ? nil : $0 }
    }

    public func run(_ payload: Payload, context: JobContext) async throws -> Output {
        let worker = context.job.workerID ?? "?"
        if let path = recordPath {
            // One write(2) per line with O_APPEND: lines from many processes do not interleave.
            let line = "\(context.id) \(context.attempt) \(worker)\n"
            let fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0o644)
            if fd >= 0 {
                _ = line.withCString { write(fd, $0, strlen($0)) }
                close(fd)
            }
        }
        let seconds = max(0, min(payload.seconds, 86_400))
        let steps = max(1, min(payload.steps ?? 10, 1000))
        for step in 1...steps {
            try await Task.sleep(for: .seconds(fractional: seconds / Double(steps)))
            try await context.progress(Double(step) * 100 / Double(steps), "step \(step) of \(steps)")
        }
        return Output(slept_seconds: seconds, attempt: context.attempt, worker: worker)
    }
}

/// `demo.flaky`: fails its first `fail_times` attempts, then succeeds; with `always: true` it
/// never succeeds, and with `permanent: true` its failure is non-retryable.
/// Payload: `{"fail_times": 2}`. Result: `{"succeeded_on_attempt": 3}`.
public struct DemoFlaky: JobHandler {
    public static let kind = "demo.flaky"
    public struct Payload: Codable, Sendable {
        public var fail_times: Int?
        public var always: Bool?
        public var permanent: Bool?
        public init(fail_times: Int? = nil, always: Bool? = nil, permanent: Bool? = nil) {
            self.fail_times = fail_times; self.always = always; self.permanent = permanent
        }
    }
    public struct Output: Codable, Sendable {
        public var succeeded_on_attempt: Int
    }
    public struct Failure: Error, CustomStringConvertible {
        public var attempt: Int
        public var description: String { "demo.flaky failed on purpose (attempt \(attempt))" }
    }
    public init() {}

    public func run(_ payload: Payload, context: JobContext) async throws -> Output {
        if payload.always == true || context.attempt <= (payload.fail_times ?? 0) {
            if payload.permanent == true { throw JobFailure.nonRetryable("demo.flaky failed on purpose, permanently") }
            throw Failure(attempt: context.attempt)
        }
        return Output(succeeded_on_attempt: context.attempt)
    }
}

/// `demo.noop`: returns at once. The benchmark's job.
public struct DemoNoop: JobHandler {
    public static let kind = "demo.noop"
    public init() {}
    public func run(_ payload: NoResult, context: JobContext) async throws -> NoResult { NoResult() }
}
