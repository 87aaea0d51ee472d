import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import SpoolCore

/// The HTTP API of a Spool gateway, for Swift programs (and the `spool` CLI's `--url` mode):
/// enqueue, follow, cancel, retry, queues, workers, and the worker protocol
/// (``RemoteWorker`` runs handlers over it).
///
/// Every call throws ``SpoolClientError`` when the gateway answers with a problem document, or
/// cannot be reached (status 0).
public struct SpoolClient: Sendable {
    public let baseURL: String
    let token: String?
    let http: HTTPClient

    /// `url`: the gateway (`http://127.0.0.1:8080`); `token`: an API token, if it needs one.
    public init(url: String, token: String? = nil, httpClient: HTTPClient = .shared) {
        baseURL = url.hasSuffix("/") ? String(url.dropLast()) : url
        self.token = token
        http = httpClient
    }

    /// What `POST /v1/jobs` answers.
    public struct Accepted: Sendable, Codable, Hashable {
        public var id: String
        public var state: JobState
        public var queue: String
        public var kind: String
        public var replayed: Bool
    }

    // MARK: Jobs

    public func enqueue(_ job: NewJob) async throws -> Accepted {
        try await call(.POST, "/v1/jobs", body: Self.body(of: job).jsonData, as: Accepted.self)
    }

    /// Enqueues up to 1,000 jobs atomically.
    public func enqueue(_ jobs: [NewJob]) async throws -> [Accepted] {
        struct Batch: Decodable { var jobs: [Accepted] }
        let body = JSONValue.object(["jobs": .array(jobs.map(Self.body(of:)))])
        return try await call(.POST, "/v1/jobs/batch", body: body.jsonData, as: Batch.self).jobs
    }

    public func job(_ id: JobID) async throws -> JobDocument { try await call(.GET, "/v1/jobs/\(id)", as: JobDocument.self) }

    /// One page of jobs, newest first.
    public func list(_ filter: JobFilter) async throws -> (jobs: [JobDocument], nextCursor: String?) {
        var query = ["limit=\(filter.limit)"]
        if let q = filter.queue { query.append("queue=\(Self.escape(q))") }
        if let s = filter.state { query.append("state=\(s.rawValue)") }
        if let k = filter.kind { query.append("kind=\(Self.escape(k))") }
        if let t = filter.tag { query.append("tag=\(Self.escape(t))") }
        if let key = filter.idempotencyKey { query.append("idempotency_key=\(Self.escape(key))") }
        if let tenant = filter.tenant { query.append("tenant=\(Self.escape(tenant))") }
        if let b = filter.batchID { query.append("batch_id=\(b)") }
        if filter.includeInternal { query.append("internal=true") }
        if let c = filter.cursor { query.append("cursor=\(Self.escape(c))") }
        struct Page: Decodable { var jobs: [JobDocument]; var next_cursor: String? }
        let page = try await call(.GET, "/v1/jobs?" + query.joined(separator: "&"), as: Page.self)
        return (page.jobs, page.next_cursor)
    }

    public func cancel(_ id: JobID) async throws -> JobDocument { try await call(.POST, "/v1/jobs/\(id)/cancel", as: JobDocument.self) }
    public func retry(_ id: JobID) async throws -> JobDocument { try await call(.POST, "/v1/jobs/\(id)/retry", as: JobDocument.self) }
    public func delete(_ id: JobID) async throws { _ = try await send(.DELETE, "/v1/jobs/\(id)") }

    /// Waits until the job is completed, failed or cancelled, following its event stream.
    public func wait(for id: JobID) async throws -> JobDocument {
        for try await _ in events(of: id) {}
        return try await job(id)
    }

    // MARK: Queues and workers

    public func queues() async throws -> [QueueDocument] {
        struct List: Decodable { var queues: [QueueDocument] }
        return try await call(.GET, "/v1/queues", as: List.self).queues
    }

    public func setPaused(_ paused: Bool, queue: String) async throws {
        _ = try await send(.POST, "/v1/queues/\(Self.escape(queue))/\(paused ? "pause" : "resume")")
    }

    /// Puts every failed job of the queue back to run (dead-letter redrive); returns how many.
    public func retryFailed(queue: String) async throws -> Int {
        struct Retried: Decodable { var retried: Int }
        return try await call(.POST, "/v1/queues/\(Self.escape(queue))/retry-failed", as: Retried.self).retried
    }

    /// Deletes the queue's jobs that wait to run; returns how many.
    public func purge(queue: String) async throws -> Int {
        struct Purged: Decodable { var purged: Int }
        return try await call(.POST, "/v1/queues/\(Self.escape(queue))/purge", as: Purged.self).purged
    }

    /// The worker registry (the token's tenant's remote workers; every worker for an admin).
    public func workers() async throws -> [WorkerDocument] {
        struct List: Decodable { var workers: [WorkerDocument] }
        return try await call(.GET, "/v1/workers", as: List.self).workers
    }

    // MARK: Requests

    static func body(of job: NewJob) -> JSONValue {
        var body: [String: JSONValue] = [
            "queue": .string(job.queue), "kind": .string(job.kind),
            "payload": JSONValue(json: job.payload) ?? .null, "priority": .number(Double(job.priority)),
        ]
        if let runAt = job.runAt { body["run_at"] = .string(Timestamp.format(runAt)) }
        if let n = job.maxAttempts { body["max_attempts"] = .number(Double(n)) }
        if let t = job.timeout { body["timeout_seconds"] = .number(t.seconds) }
        if let key = job.idempotencyKey { body["idempotency_key"] = .string(key) }
        // The token decides the tenant; one named here must be the token's (or the token an admin's).
        if job.tenant != NewJob.defaultTenant { body["tenant"] = .string(job.tenant) }
        if !job.tags.isEmpty { body["tags"] = .array(job.tags.map(JSONValue.string)) }
        if let url = job.callbackURL { body["callback_url"] = .string(url) }
        if !job.dependsOn.isEmpty {
            body["depends_on"] = .array(job.dependsOn.compactMap { if case .job(let id) = $0 { .string(id.description) } else { nil } })
            body["on_parent_failure"] = .string(job.onParentFailure.rawValue)
        }
        if let batch = job.batchID { body["batch_id"] = .string(batch.description) }
        return .object(body)
    }

    // MARK: Workflows

    /// What `POST /v1/topics/{topic}/events` answers.
    public struct Published: Sendable, Codable, Hashable {
        public var event_id: String
        public var topic: String
        public var job_ids: [String]
        public var replayed: Bool
        public init(event_id: String, topic: String, job_ids: [String], replayed: Bool) {
            self.event_id = event_id; self.topic = topic; self.job_ids = job_ids; self.replayed = replayed
        }
    }

    /// Publishes an event to a topic: one job per matching subscriber.
    public func publish(topic: String, payload: JSONValue = .object([:]), attributes: [String: String] = [:],
                        idempotencyKey: String? = nil) async throws -> Published {
        var body: [String: JSONValue] = ["payload": payload, "attributes": .object(attributes.mapValues(JSONValue.string))]
        if let idempotencyKey { body["idempotency_key"] = .string(idempotencyKey) }
        return try await call(.POST, "/v1/topics/\(Self.escape(topic))/events", body: JSONValue.object(body).jsonData, as: Published.self)
    }

    /// Every topic with its subscribers and counts.
    public func topics() async throws -> [TopicDocument] {
        struct Answer: Decodable { var topics: [TopicDocument] }
        return try await call(.GET, "/v1/topics", as: Answer.self).topics
    }

    public func batch(_ id: JobID) async throws -> BatchDocument { try await call(.GET, "/v1/batches/\(id)", as: BatchDocument.self) }

    static func escape(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? s }

    func call<T: Decodable>(_ method: HTTPMethod, _ path: String, body: Data? = nil, as type: T.Type,
                            timeout: TimeAmount = .seconds(30)) async throws -> T {
        let data = try await send(method, path, body: body, timeout: timeout)
        do { return try JSON.decode(T.self, from: data) } catch {
            throw SpoolClientError(status: 0, type: "bad-answer", detail: "\(method) \(path): unexpected answer: \(error)")
        }
    }

    /// Sends a request and returns the body of a 2xx answer.
    func send(_ method: HTTPMethod, _ path: String, body: Data? = nil, timeout: TimeAmount = .seconds(30)) async throws -> Data {
        var request = request(path)
        request.method = method
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(data: body))
        }
        let response: HTTPClientResponse
        let data: Data
        do {
            response = try await http.execute(request, timeout: timeout)
            data = Data(buffer: try await response.body.collect(upTo: 64 << 20))
        } catch {
            throw SpoolClientError.unreachable(baseURL, error)
        }
        guard (200..<300).contains(response.status.code) else {
            throw SpoolClientError(status: Int(response.status.code), problem: data)
        }
        return data
    }

    func request(_ path: String) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: baseURL + path)
        request.headers.add(name: "User-Agent", value: "spool-swift")
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        return request
    }
}

/// A refusal by the gateway (its problem document), or no answer at all (`status` 0).
public struct SpoolClientError: Error, CustomStringConvertible, Sendable {
    /// No answer from `baseURL`, said in words (the HTTP library's text only where no words fit).
    static func unreachable(_ baseURL: String, _ error: any Error) -> SpoolClientError {
        let text = String(describing: error).lowercased()
        let why = text.contains("refused") ? "connection refused: is Spool running there?"
            : text.contains("timeout") || text.contains("timed out") ? "no answer in time"
            : text.contains("getaddrinfo") || text.contains("nxdomain") || text.contains("not known") || text.contains("resolv")
                || text.contains("dns error")
                ? "the host name does not resolve"
            : text.contains("unreachable") || text.contains("no route") ? "no route to the host"
            : text.contains("tls") || text.contains("ssl") || text.contains("certificate") || text.contains("handshake")
                ? "the TLS handshake failed: \(String(describing: error).prefix(200))"
            : "no connection: \(String(describing: error).prefix(200))"
        return SpoolClientError(status: 0, type: "unreachable", detail: "the gateway at \(baseURL) is not reachable (\(why))")
    }

    public var status: Int
    /// The problem type without its `urn:spool:problem:` prefix (`lease-lost`, `validation`, ...).
    public var type: String
    public var detail: String

    public init(status: Int, type: String, detail: String) {
        self.status = status; self.type = type; self.detail = detail
    }

    init(status: Int, problem data: Data) {
        struct Problem: Decodable { var type: String?; var title: String?; var detail: String? }
        let problem = try? JSONDecoder().decode(Problem.self, from: data)
        let type = problem?.type ?? "http-\(status)"
        self.init(status: status, type: type.hasPrefix("urn:spool:problem:") ? String(type.dropFirst(18)) : type,
                  detail: problem?.detail ?? problem?.title ?? String(decoding: data.prefix(300), as: UTF8.self))
    }

    /// Worth trying again later: the gateway or its store is down, or was not reached.
    public var isUnavailable: Bool { status == 0 || status == 503 || status == 502 || status == 504 }

    public var description: String { status == 0 ? detail : "\(status) \(type): \(detail)" }
}
