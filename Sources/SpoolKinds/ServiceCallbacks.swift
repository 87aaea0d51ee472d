import Foundation
import SpoolCore
import Synchronization

/// Where services that answer `202 Accepted` report back, and how a waiting attempt learns
/// that they did.
///
/// The reports go to the gateway (`POST /v1/service/jobs/{id}/progress|complete|fail` with
/// the attempt's lease token), which may be another process: the waiting handler reads the
/// job from the store until it is no longer this attempt's, meanwhile the engine keeps the
/// lease alive with its heartbeats, up to the job's timeout.
public final class ServiceCallbacks: Sendable {
    private let base = Mutex<String?>(nil)
    private let lookup: @Sendable (JobID) async throws -> Job?
    private let pollInterval: Duration

    /// `baseURL`: the gateway's address as services reach it (`gateway.public_url`), or `nil`
    /// until ``useIfUnset(_:)`` gives the local gateway's.
    public init(baseURL: String?, pollInterval: Duration = .seconds(1), lookup: @escaping @Sendable (JobID) async throws -> Job?) {
        base.withLock { $0 = baseURL.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 } }
        self.pollInterval = pollInterval
        self.lookup = lookup
    }

    public var baseURL: String? { base.withLock { $0 } }

    /// The local gateway's address, once it listens, unless one was configured.
    public func useIfUnset(_ url: String) { base.withLock { if $0 == nil { $0 = url } } }

    /// Returns by throwing ``OutcomeReportedElsewhere`` once the job is no longer running
    /// this attempt (the service completed or failed it, or it was cancelled); cancellation
    /// (timeout, lost lease, shutdown) ends the wait too.
    func waitForReport(on context: JobContext) async throws -> Never {
        while true {
            try await Task.sleep(for: pollInterval)
            // A store that does not answer now may later: the lease and the timeout still hold.
            let found: Job?
            do { found = try await lookup(context.id) } catch { continue }
            guard let job = found, job.state == .processing, job.attempt == context.attempt else { throw OutcomeReportedElsewhere() }
        }
    }
}
