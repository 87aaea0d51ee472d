import Foundation
import SpoolCore
import Subprocess
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
#if canImport(System)
import System
#else
import SystemPackage
#endif

/// A job kind that runs a program, declared in the config file (no worker code).
///
/// - The program and its arguments come from the config only, never from the payload; no shell.
/// - The payload is written to standard input as JSON. The environment holds only
///   ``inheritedVariables`` of Spool's, the kind's `environment`, and `SPOOL_JOB_ID`,
///   `SPOOL_JOB_ATTEMPT`, `SPOOL_JOB_MAX_ATTEMPTS`, `SPOOL_JOB_KIND`, `SPOOL_JOB_QUEUE` and
///   `SPOOL_JOB_TENANT` (Spool's environment holds secrets that are not the command's).
/// - Exit 0: completed, standard output (JSON, or nothing) is the result. Exit
///   ``doNotRetryExitCode`` (65, `EX_DATAERR`): failed for good. Any other exit, or a signal:
///   the attempt failed and is retried. The tail of standard error is the error kept on the job.
/// - A line `spool:progress <percent> [message]` on standard error reports progress (at most
///   four reports a second are written; the latest wins).
/// - The command runs in a session of its own. A timeout, a cancel or a lost lease sends
///   SIGTERM to its whole process group, then SIGKILL after the grace period; when the
///   attempt ends, whatever is left of the group is killed (a descendant that started a
///   session of its own has left the group and is not).
public struct CommandKind: Sendable {
    public var kind: String
    /// The program (an absolute path) and its arguments.
    public var arguments: [String]
    /// The longest one attempt may take; the job's own timeout bounds it too.
    public var timeout: Duration?
    /// Between SIGTERM and SIGKILL.
    public var gracePeriod: Duration
    /// Variables added to the command's environment.
    public var environment: [String: String]
    public var workingDirectory: String?

    /// The exit code that means "the input is wrong, do not retry" (`EX_DATAERR` of sysexits.h).
    public static let doNotRetryExitCode: Int32 = 65
    /// A line of standard error starting with this reports progress: `spool:progress 40 resizing`.
    public static let progressPrefix = "spool:progress "
    /// Standard output past this fails the attempt.
    public static let maxOutputBytes = 1 << 20
    /// How much of standard error is kept on the job as its error.
    public static let errorTailBytes = 2_000
    /// Longer lines of standard error are cut (a progress line must fit).
    static let maxLineBytes = 4_096
    static let progressInterval = Duration.milliseconds(250)
    /// Progress messages are cut to this many characters (what the API takes).
    static let maxProgressMessage = 1000

    public init(kind: String, arguments: [String], timeout: Duration? = nil, gracePeriod: Duration = .seconds(5),
                environment: [String: String] = [:], workingDirectory: String? = nil) {
        precondition(!arguments.isEmpty, "a command kind needs a program")
        self.kind = kind; self.arguments = arguments; self.timeout = timeout; self.gracePeriod = gracePeriod
        self.environment = environment; self.workingDirectory = workingDirectory
    }

    /// The handler to register.
    public func handler() -> AnyJobHandler {
        Self.ignoreBrokenPipes()
        return AnyJobHandler(kind: kind) { payload, context in try await run(payload, context: context) }
    }

    /// A command that exits without reading its input must not take the process down with
    /// SIGPIPE: the write fails with EPIPE instead, which is ignored.
    static func ignoreBrokenPipes() { _ = signal(SIGPIPE, SIG_IGN) }

    /// `nil` when `path` is an executable file, else what is wrong with it.
    public static func checkProgram(_ path: String) -> String? {
        guard path.hasPrefix("/") else { return "must be an absolute path (no shell or PATH lookup is done)" }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else { return "does not exist" }
        guard access(path, X_OK) == 0 else { return "is not executable by this process" }
        return nil
    }

    /// Variables of Spool's own environment that a command gets; nothing else is passed on
    /// (Spool's environment holds secrets: tokens, database URLs, the values of `${VAR}`).
    public static let inheritedVariables = ["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR"]

    /// The command's environment: a few of this process's variables, the kind's `env`, the job.
    func processEnvironment(for job: Job) -> [String: String] {
        let own = ProcessInfo.processInfo.environment
        var variables: [String: String] = [:]
        for name in Self.inheritedVariables { variables[name] = own[name] }
        if variables["PATH"] == nil { variables["PATH"] = "/usr/local/bin:/usr/bin:/bin" }
        variables.merge(environment) { $1 }
        variables["SPOOL_JOB_ID"] = job.id.description
        variables["SPOOL_JOB_ATTEMPT"] = String(job.attempt)
        variables["SPOOL_JOB_MAX_ATTEMPTS"] = String(job.maxAttempts)
        variables["SPOOL_JOB_KIND"] = job.kind
        variables["SPOOL_JOB_QUEUE"] = job.queue
        variables["SPOOL_JOB_TENANT"] = job.tenant
        return variables
    }

    func run(_ payload: Data, context: JobContext) async throws -> Data? {
        let job = context.job
        var environmentKeys: [Environment.Key: String] = [:]
        for (key, value) in processEnvironment(for: job) {
            if let key = Environment.Key(rawValue: key) { environmentKeys[key] = value }
        }
        var configuration = Configuration(
            executable: .path(FilePath(arguments[0])), arguments: Arguments(Array(arguments.dropFirst())),
            environment: .custom(environmentKeys), workingDirectory: workingDirectory.map { FilePath($0) })
        configuration.platformOptions.createSession = true
        configuration.platformOptions.teardownSequence = [.gracefulShutDown(toProcessGroup: true, allowedDurationToNextStep: gracePeriod)]
        let limit = min(timeout ?? job.timeout, job.timeout)
        let group = ProcessGroup()
        defer { group.killRemaining() }

        let finished: Finished
        let kind = self.kind, prepared = configuration
        do {
            // (Cancelling the command runs its teardown: SIGTERM, the grace period, SIGKILL.)
            finished = try await withTimeLimit(limit, "\(kind): the command did not finish within \(limit.seconds)s") {
                try await Self.execute(prepared, payload: payload, context: context, group: group, kind: kind)
            }
        } catch let error as ServiceKindError {
            throw error
        } catch let error as SubprocessError {
            if Task.isCancelled { throw CancellationError() }
            throw ServiceKindError("\(kind): \(Self.describe(error))")
        }

        let tail = finished.errorTail.isEmpty ? "" : ": \(finished.errorTail)"
        switch finished.status {
        case .exited(0):
            let output = Data(finished.output)
            if output.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) { return nil }
            guard JSONValue(json: output) != nil else {
                let excerpt = String(decoding: output.prefix(500), as: UTF8.self)
                throw JobFailure.nonRetryable("\(kind): the command exited 0 but its output is not JSON: \(excerpt)")
            }
            return output
        case .exited(Self.doNotRetryExitCode):
            throw JobFailure.nonRetryable("\(kind): the command exited with status \(Self.doNotRetryExitCode) (not retried)\(tail)")
        case .exited(let code):
            throw ServiceKindError("\(kind): the command exited with status \(code)\(tail)")
        case .signaled(let signal):
            throw ServiceKindError("\(kind): the command was killed by signal \(signal)\(tail)")
        }
    }

    struct Finished: Sendable {
        var status: TerminationStatus
        var output: [UInt8]
        var errorTail: String
    }

    private enum Stream: Sendable {
        case input
        case output([UInt8])
        case errors(String)
    }

    private static func execute(_ configuration: Configuration, payload: Data, context: JobContext,
                                group: ProcessGroup, kind: String) async throws -> Finished {
        let input = [UInt8](payload)
        let result = try await Subprocess.run(configuration, input: .inputWriter, output: .sequence, error: .sequence) { execution in
            group.started(execution.processIdentifier.value)
            return try await withThrowingTaskGroup(of: Stream.self) { streams in
                streams.addTask {
                    // A command that does not read its input, or exits early, is not an error here.
                    _ = try? await execution.standardInputWriter.write(input)
                    try? await execution.standardInputWriter.finish()
                    return .input
                }
                streams.addTask { .output(try await collect(execution.standardOutput, kind: kind)) }
                streams.addTask { .errors(try await follow(execution.standardError, context: context)) }
                var output: [UInt8] = [], errors = ""
                for try await stream in streams {
                    switch stream {
                    case .input: break
                    case .output(let bytes): output = bytes
                    case .errors(let tail): errors = tail
                    }
                }
                return (output, errors)
            }
        }
        return Finished(status: result.terminationStatus, output: result.closureResult.0, errorTail: result.closureResult.1)
    }

    /// Standard output, up to the limit (past it the attempt fails and the command is stopped).
    private static func collect(_ sequence: SubprocessOutputSequence, kind: String) async throws -> [UInt8] {
        var bytes: [UInt8] = []
        for try await buffer in sequence {
            guard bytes.count + buffer.count <= maxOutputBytes else {
                throw ServiceKindError("\(kind): the command wrote more than \(maxOutputBytes) bytes to standard output")
            }
            buffer.withUnsafeBytes { bytes.append(contentsOf: $0) }
        }
        return bytes
    }

    /// Reads standard error line by line: progress lines are reported, the rest is kept as a
    /// bounded tail (the error of a failed attempt).
    private static func follow(_ sequence: SubprocessOutputSequence, context: JobContext) async throws -> String {
        var tail = ErrorTail()
        var line: [UInt8] = []
        // Each report is a store write (or an HTTP call): a command that prints progress in a
        // tight loop gets its latest value written, at most every `progressInterval`.
        var pending: (percent: Double, message: String?)?
        var lastReport = ContinuousClock.now - progressInterval
        func report() async {
            guard let progress = pending else { return }
            pending = nil
            lastReport = .now
            // A lost lease stops the attempt from outside; nothing to do about it here.
            try? await context.progress(progress.percent, progress.message.map { String($0.prefix(maxProgressMessage)) })
        }
        func finishLine() async {
            if let progress = parseProgress(line) {
                pending = progress
                if ContinuousClock.now - lastReport >= progressInterval { await report() }
            } else {
                tail.append(line)
            }
            line.removeAll(keepingCapacity: true)
        }
        for try await buffer in sequence {
            let bytes = buffer.withUnsafeBytes { Array($0) }
            for byte in bytes {
                if byte == 0x0A {
                    await finishLine()
                } else if line.count < maxLineBytes {
                    line.append(byte)
                }
            }
        }
        if !line.isEmpty { await finishLine() }
        await report()
        return tail.text
    }

    /// `spool:progress 40 resizing` → (40, "resizing"); `nil` for any other line.
    static func parseProgress(_ line: [UInt8]) -> (percent: Double, message: String?)? {
        let text = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.hasPrefix(progressPrefix.trimmingCharacters(in: .whitespaces)) else { return nil }
        let rest = text.dropFirst(progressPrefix.count - 1).drop { $0 == " " }
        let number = rest.prefix { !$0.isWhitespace }
        guard let percent = Double(number), percent.isFinite, (0...100).contains(percent) else { return nil }
        let message = rest.dropFirst(number.count).trimmingCharacters(in: .whitespaces)
        return (percent, message.isEmpty ? nil : message)
    }

    /// The last lines of standard error, at most ``errorTailBytes``.
    struct ErrorTail {
        private var lines: [[UInt8]] = []
        private var size = 0
        mutating func append(_ line: [UInt8]) {
            guard !line.isEmpty else { return }
            lines.append(line)
            size += line.count + 1
            while size > errorTailBytes, lines.count > 1 {
                size -= lines.removeFirst().count + 1
            }
        }
        var text: String {
            let joined = Array(lines.joined(separator: [0x0A]))
            // Bytes, not characters; a character cut in two at the start is dropped.
            let text = String(decoding: joined.suffix(errorTailBytes), as: UTF8.self)
            return text.drop { $0 == "\u{FFFD}" }.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    static func describe(_ error: SubprocessError) -> String {
        switch error.code {
        case .executableNotFound: "the program was not found or is not executable"
        case .failedToChangeWorkingDirectory: "could not change to the working directory"
        case .spawnFailed: "could not start the command" + (error.underlyingError.map { " (\($0))" } ?? "")
        default: "running the command failed (\(error))"
        }
    }
}

/// The process group of one command (its pid, as it leads a session of its own), killed when
/// the attempt ends so that no grandchild outlives it.
final class ProcessGroup: Sendable {
    private let leader = Mutex<pid_t?>(nil)

    func started(_ pid: pid_t) { leader.withLock { $0 = pid } }

    func killRemaining() {
        guard let pid = leader.withLock({ $0 }), pid > 1 else { return }
        _ = kill(-pid, SIGKILL)
    }
}
