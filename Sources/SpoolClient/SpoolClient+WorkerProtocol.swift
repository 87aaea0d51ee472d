import Foundation
import SpoolCore

/// The worker protocol (`/v1/worker/...`): what ``RemoteWorker`` uses, for workers of your own.
extension SpoolClient {
    /// A job as a lease hands it out.
    public struct LeasedJobDocument: Sendable, Decodable {
        public var id: String
        public var tenant: String
        public var queue: String
        public var kind: String
        public var payload: JSONValue?
        public var attempt: Int
        public var max_attempts: Int
        public var priority: Int
        public var tags: [String]
        public var idempotency_key: String?
        public var timeout_seconds: Double
        public var deadline: String
        public var created_at: String
        public var lease_token: String
        /// The job's parents and their results.
        public var parents: [ParentDocument]?
        public var batch_id: String?

        /// The job as the engine's types know it (for a ``JobContext``).
        public var job: Job? {
            guard let id = JobID(id) else { return nil }
            return Job(id: id, tenant: tenant, queue: queue, kind: kind, payload: (payload ?? .null).jsonData, priority: priority,
                       state: .processing, attempt: attempt, maxAttempts: max_attempts, runAt: Date(),
                       timeout: .seconds(fractional: timeout_seconds), createdAt: Timestamp.parse(created_at) ?? Date(),
                       idempotencyKey: idempotency_key, tags: tags)
        }
    }

    public struct Lease: Sendable, Decodable {
        public var jobs: [LeasedJobDocument]
        public var lease_seconds: Double
        public var heartbeat_seconds: Double
    }

    /// What a worker says about itself when it leases (shown by `GET /v1/workers`).
    public struct WorkerIdentity: Sendable {
        public var id: String
        public var name: String
        public var host: String?
        public var pid: Int?
        public var version: String?
        public var concurrency: Int?

        public init(id: String, name: String, host: String? = nil, pid: Int? = nil, version: String? = nil, concurrency: Int? = nil) {
            self.id = id; self.name = name; self.host = host; self.pid = pid; self.version = version; self.concurrency = concurrency
        }
    }

    /// One job's outcome in a batch answer: `completed`, `retried`, `failed`, or a problem type.
    public struct Outcome: Sendable, Decodable {
        public var job_id: String
        public var status: String
        public var retry_at: String?
        public var detail: String?
    }

    /// Leases up to `max` jobs of `kinds` from `queues`, waiting up to `wait` for the first.
    public func lease(_ worker: WorkerIdentity, queues: [String], kinds: [String], max: Int, wait: Duration) async throws -> Lease {
        var body: [String: JSONValue] = [
            "worker_id": .string(worker.id), "name": .string(worker.name),
            "queues": .array(queues.map(JSONValue.string)), "kinds": .array(kinds.map(JSONValue.string)),
            "max_jobs": .number(Double(max)), "wait_seconds": .number(wait.seconds),
        ]
        if let host = worker.host { body["host"] = .string(host) }
        if let pid = worker.pid { body["pid"] = .number(Double(pid)) }
        if let version = worker.version { body["version"] = .string(version) }
        if let concurrency = worker.concurrency { body["concurrency"] = .number(Double(concurrency)) }
        return try await call(.POST, "/v1/worker/lease", body: JSONValue.object(body).jsonData, as: Lease.self,
                              timeout: .seconds(Int64(wait.seconds) + 30))
    }

    /// Renews leases; returns the ids of the lost ones. `stopped`: the worker is leaving (its
    /// registry entry goes).
    public func heartbeat(workerID: String?, leases: [(id: String, token: String)], stopped: Bool = false) async throws -> Set<String> {
        var body: [String: JSONValue] = [
            "leases": .array(leases.map { .object(["job_id": .string($0.id), "lease_token": .string($0.token)]) }),
        ]
        if let workerID { body["worker_id"] = .string(workerID) }
        if stopped { body["stopped"] = .bool(true) }
        struct Answer: Decodable { var lost: [String] }
        return Set(try await call(.POST, "/v1/worker/heartbeat", body: JSONValue.object(body).jsonData, as: Answer.self).lost)
    }

    /// Completes many jobs: `result` is each job's JSON result (`nil` for none).
    public func complete(_ items: [(id: String, token: String, result: Data?)]) async throws -> [Outcome] {
        let jobs = items.map { item -> JSONValue in
            var o: [String: JSONValue] = ["job_id": .string(item.id), "lease_token": .string(item.token)]
            if let result = item.result { o["result"] = JSONValue(json: result) ?? .null }
            return .object(o)
        }
        return try await outcomes("/v1/worker/complete", jobs)
    }

    /// Reports many failed attempts.
    public func fail(_ items: [(id: String, token: String, error: String, retryable: Bool, retryAfter: Duration?, timedOut: Bool)]) async throws -> [Outcome] {
        let jobs = items.map { item -> JSONValue in
            var o: [String: JSONValue] = [
                "job_id": .string(item.id), "lease_token": .string(item.token), "error": .string(item.error),
                "retryable": .bool(item.retryable), "timed_out": .bool(item.timedOut),
            ]
            if let after = item.retryAfter { o["retry_after_seconds"] = .number(after.seconds) }
            return .object(o)
        }
        return try await outcomes("/v1/worker/fail", jobs)
    }

    /// Gives a job back without counting the attempt.
    public func release(_ id: String, token: String) async throws {
        _ = try await send(.POST, "/v1/worker/jobs/\(Self.escape(id))/release", body: JSONValue.object(["lease_token": .string(token)]).jsonData)
    }

    public func progress(_ id: String, token: String, _ progress: JobProgress) async throws {
        var body: [String: JSONValue] = ["lease_token": .string(token), "percent": .number(progress.percent)]
        if let message = progress.message { body["message"] = .string(message) }
        _ = try await send(.POST, "/v1/worker/jobs/\(Self.escape(id))/progress", body: JSONValue.object(body).jsonData)
    }

    private func outcomes(_ path: String, _ jobs: [JSONValue]) async throws -> [Outcome] {
        struct Answer: Decodable { var results: [Outcome] }
        return try await call(.POST, path, body: JSONValue.object(["jobs": .array(jobs)]).jsonData, as: Answer.self).results
    }
}
