import ArgumentParser
import Foundation
import SpoolClient
import SpoolCore

/// What `spool watch` shows of a job as it changes.
struct JobUpdate: Sendable, Equatable {
    var state: JobState
    var attempt: Int
    var maxAttempts: Int?
    var percent: Double?
    var message: String?
    var result: JSONValue?
    var error: String?

    init(_ doc: JobDocument) {
        state = doc.state; attempt = doc.attempt; maxAttempts = doc.max_attempts
        percent = doc.progress?.percent; message = doc.progress?.message
        result = doc.result; error = doc.errors.last?.message
    }

    /// From an event document of the SSE stream, on top of what was known.
    init?(event: JSONValue, previous: JobUpdate?) {
        guard case .object(let o) = event else { return nil }
        var u = previous ?? JobUpdate(state: .pending, attempt: 0)
        if case .string(let s)? = o["state"], let state = JobState(rawValue: s) { u.state = state }
        if let n = o["attempt"]?.doubleValue { u.attempt = Int(n) }
        if case .object(let p)? = o["progress"] {
            u.percent = p["percent"]?.doubleValue
            if case .string(let m)? = p["message"] { u.message = m } else { u.message = nil }
        }
        if case .object(let e)? = o["error"], case .string(let m)? = e["message"] { u.error = m }
        if let r = o["result"] { u.result = r }
        if case .string("deleted")? = o["type"] { u.error = "the job was deleted"; u.state = .cancelled }
        self = u
    }

    init(state: JobState, attempt: Int) { self.state = state; self.attempt = attempt }
}

extension Backend {
    /// Follows a job until it finishes. Through a gateway this reads its Server-Sent Events
    /// (reconnecting with `Last-Event-ID`); on a database file it polls.
    func follow(_ id: JobID) -> AsyncThrowingStream<JobUpdate, any Error> {
        if let remote = self as? RemoteBackend { return remote.followEvents(id) }
        return AsyncThrowingStream { continuation in
            let task = Task {
                var last: JobUpdate?
                do {
                    while !Task.isCancelled {
                        let update = JobUpdate(try await self.job(id))
                        if update != last { continuation.yield(update); last = update }
                        if update.state.isFinished { break }
                        try await Task.sleep(for: .milliseconds(100))
                    }
                    continuation.finish()
                } catch { continuation.finish(throwing: error) }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}

extension RemoteBackend {
    func followEvents(_ id: JobID) -> AsyncThrowingStream<JobUpdate, any Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                var current: JobUpdate?
                do {
                    for try await event in streams.events(of: id) {
                        let update: JobUpdate?
                        if event.type == "snapshot" {
                            update = (try? JSON.decode(JobDocument.self, from: Data(event.data.utf8))).map(JobUpdate.init)
                        } else {
                            update = JSONValue(json: Data(event.data.utf8)).flatMap { JobUpdate(event: $0, previous: current) }
                        }
                        if let update {
                            current = update
                            continuation.yield(update)
                        }
                    }
                    continuation.finish()
                } catch { continuation.finish(throwing: error) }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}

/// Draws a job's progress on the terminal until it finishes.
struct JobWatcher {
    let backend: any Backend

    /// Exit status for a finished job: nil (0) when completed, 1 failed, 2 cancelled.
    static func exitCode(_ state: JobState) -> Int32? {
        switch state {
        case .completed: nil
        case .cancelled: 2
        default: 1
        }
    }

    /// Follows the job, drawing a progress bar on standard error, and prints the result (or
    /// error) at the end. Returns the final state.
    func watch(_ id: JobID) async throws -> JobState {
        let tty = isatty(STDERR_FILENO) == 1
        var last: JobUpdate?
        for try await update in backend.follow(id) {
            last = update
            let line = Self.render(update)
            FileHandle.standardError.write(Data((tty ? "\r\u{1B}[2K" + line : line + "\n").utf8))
        }
        if tty { FileHandle.standardError.write(Data("\n".utf8)) }
        guard let last else { throw CLIError("no news of job \(id)") }
        switch last.state {
        case .completed:
            let text = last.result.map { String(decoding: $0.jsonData, as: UTF8.self) } ?? "null"
            print(text)
        case .failed:
            FileHandle.standardError.write(Data("job \(id) failed after \(last.attempt) attempt(s): \(last.error ?? "no error recorded")\n".utf8))
        case .cancelled:
            FileHandle.standardError.write(Data("job \(id) was cancelled\n".utf8))
        default:
            throw CLIError("the event stream of job \(id) ended before the job did")
        }
        return last.state
    }

    static func render(_ u: JobUpdate) -> String {
        let percent = u.state == .completed ? 100 : (u.percent ?? 0)
        let filled = Int((percent / 100 * 30).rounded())
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: 30 - filled)
        var line = "[\(bar)] " + String(format: "%5.1f%%", percent) + "  \(u.state.rawValue)"
        if u.attempt > 0 { line += "  attempt \(u.attempt)" + (u.maxAttempts.map { "/\($0)" } ?? "") }
        if let message = u.message, u.state == .processing { line += "  \(message)" }
        if u.state != .completed, let error = u.error, u.state != .processing { line += "  (last error: \(error.prefix(80)))" }
        return line
    }
}

struct Watch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Follow a job live: a progress bar, its message, then the result or error. Exit 1 if it fails, 2 if cancelled.")
    @OptionGroup var store: StoreOptions
    @Argument(help: "Job id.") var id: String

    func run() async throws {
        let id = try parseJobID(id)
        let state: JobState
        do { state = try await JobWatcher(backend: store.backend()).watch(id) } catch { throw explain(error) }
        if let code = JobWatcher.exitCode(state) { throw ExitCode(code) }
    }
}
