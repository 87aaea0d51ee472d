import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import SpoolCore

/// What the job and queue commands need, from a local database file or a running gateway.
protocol Backend: Sendable {
    func enqueue(_ job: NewJob) async throws -> JobDocument
    func job(_ id: JobID) async throws -> JobDocument
    func list(_ filter: JobFilter) async throws -> (jobs: [JobDocument], next: String?)
    func cancel(_ id: JobID) async throws -> JobDocument
    func retry(_ id: JobID) async throws -> JobDocument
    func queues() async throws -> [QueueDocument]
    func setPaused(_ paused: Bool, queue: String) async throws
    func workers() async throws -> [WorkerDocument]
}

/// Straight to the database file.
struct LocalBackend: Backend {
    let spool: Spool

    func enqueue(_ job: NewJob) async throws -> JobDocument { JobDocument(try await spool.enqueue(job).job) }
    func job(_ id: JobID) async throws -> JobDocument {
        guard let job = try await spool.job(id) else { throw CLIError("job \(id) not found") }
        return JobDocument(job)
    }
    func list(_ filter: JobFilter) async throws -> (jobs: [JobDocument], next: String?) {
        let page = try await spool.list(filter)
        return (page.jobs.map(JobDocument.init), page.nextCursor)
    }
    func cancel(_ id: JobID) async throws -> JobDocument { JobDocument(try await spool.cancel(id)) }
    func retry(_ id: JobID) async throws -> JobDocument { JobDocument(try await spool.retry(id)) }
    func queues() async throws -> [QueueDocument] { try await spool.queueOverview() }
    func setPaused(_ paused: Bool, queue: String) async throws { try await spool.store.setPaused(paused, queue: queue) }
    func workers() async throws -> [WorkerDocument] {
        let now = Date()
        return try await spool.store.workers(tenant: nil).map { WorkerDocument($0, now: now) }
    }
}

/// Through a running gateway's HTTP API (`--url`, `SPOOL_URL`, `SPOOL_TOKEN`).
struct RemoteBackend: Backend {
    let baseURL: String
    let token: String?

    func enqueue(_ job: NewJob) async throws -> JobDocument {
        var body: [String: JSONValue] = [
            "queue": .string(job.queue), "kind": .string(job.kind),
            "payload": JSONValue(json: job.payload) ?? .null, "priority": .number(Double(job.priority)),
        ]
        if let runAt = job.runAt { body["run_at"] = .string(Timestamp.format(runAt)) }
        if let n = job.maxAttempts { body["max_attempts"] = .number(Double(n)) }
        if let t = job.timeout { body["timeout_seconds"] = .number(t.seconds) }
        if let key = job.idempotencyKey { body["idempotency_key"] = .string(key) }
        if !job.tags.isEmpty { body["tags"] = .array(job.tags.map(JSONValue.string)) }
        if let url = job.callbackURL { body["callback_url"] = .string(url) }
        struct Accepted: Decodable { var id: String }
        let accepted = try JSON.decode(Accepted.self, from: try await call(.POST, "/v1/jobs", body: JSONValue.object(body).jsonData))
        return try await self.job(try parseJobID(accepted.id))
    }

    func job(_ id: JobID) async throws -> JobDocument {
        try JSON.decode(JobDocument.self, from: try await call(.GET, "/v1/jobs/\(id)"))
    }

    func list(_ filter: JobFilter) async throws -> (jobs: [JobDocument], next: String?) {
        var query = ["limit=\(filter.limit)"]
        if let q = filter.queue { query.append("queue=\(escape(q))") }
        if let s = filter.state { query.append("state=\(s.rawValue)") }
        if let k = filter.kind { query.append("kind=\(escape(k))") }
        if let c = filter.cursor { query.append("cursor=\(escape(c))") }
        struct Page: Decodable { var jobs: [JobDocument]; var next_cursor: String? }
        let page = try JSON.decode(Page.self, from: try await call(.GET, "/v1/jobs?" + query.joined(separator: "&")))
        return (page.jobs, page.next_cursor)
    }

    func cancel(_ id: JobID) async throws -> JobDocument {
        try JSON.decode(JobDocument.self, from: try await call(.POST, "/v1/jobs/\(id)/cancel"))
    }

    func retry(_ id: JobID) async throws -> JobDocument {
        try JSON.decode(JobDocument.self, from: try await call(.POST, "/v1/jobs/\(id)/retry"))
    }

    func queues() async throws -> [QueueDocument] {
        struct List: Decodable { var queues: [QueueDocument] }
        return try JSON.decode(List.self, from: try await call(.GET, "/v1/queues")).queues
    }

    func setPaused(_ paused: Bool, queue: String) async throws {
        _ = try await call(.POST, "/v1/queues/\(escape(queue))/\(paused ? "pause" : "resume")")
    }

    func workers() async throws -> [WorkerDocument] {
        struct List: Decodable { var workers: [WorkerDocument] }
        return try JSON.decode(List.self, from: try await call(.GET, "/v1/workers")).workers
    }

    private func escape(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? s }

    /// Sends a request; a problem document becomes a readable error.
    private func call(_ method: HTTPMethod, _ path: String, body: Data? = nil) async throws -> Data {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(data: body))
        }
        let response: HTTPClientResponse
        do {
            response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        } catch {
            throw CLIError("cannot reach \(baseURL): \(error)")
        }
        let data = Data(buffer: try await response.body.collect(upTo: 64 << 20))
        guard (200..<300).contains(response.status.code) else {
            struct Problem: Decodable { var detail: String?; var title: String? }
            let problem = try? JSONDecoder().decode(Problem.self, from: data)
            throw CLIError("\(response.status.code): \(problem?.detail ?? problem?.title ?? String(decoding: data.prefix(200), as: UTF8.self))")
        }
        return data
    }
}
