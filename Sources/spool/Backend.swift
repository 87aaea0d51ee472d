import AsyncHTTPClient
import Foundation
import SpoolClient
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
    func topics() async throws -> [TopicDocument]
    func publish(topic: String, payload: JSONValue, attributes: [String: String], idempotencyKey: String?, tenant: String) async throws -> SpoolClient.Published
    func batch(_ id: JobID) async throws -> BatchDocument
    func delete(_ id: JobID) async throws
    func retryFailed(queue: String) async throws -> Int
    func purge(queue: String) async throws -> Int
    /// Job events as the feed sends them: (id, type, document), from after `after` or from now.
    func feed(queue: String?, kind: String?, after: Int64?) -> AsyncThrowingStream<FeedEvent, any Error>
}

/// One event of the feed, as `spool events` prints it.
struct FeedEvent: Sendable {
    var id: String?
    var type: String
    var data: JSONValue
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
    func setPaused(_ paused: Bool, queue: String) async throws {
        if paused { try await spool.pause(queue: queue) } else { try await spool.resume(queue: queue) }
    }
    func delete(_ id: JobID) async throws { try await spool.store.delete(id, tenant: nil) }
    func retryFailed(queue: String) async throws -> Int { try await spool.retryFailed(queue: queue) }
    func purge(queue: String) async throws -> Int { try await spool.purge(queue: queue) }
    /// Polls the event log (a database file has no push to wait on across processes).
    func feed(queue: String?, kind: String?, after: Int64?) -> AsyncThrowingStream<FeedEvent, any Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    let filter = EventFilter(queues: queue.map { [$0] }, kind: kind)
                    var seq: Int64
                    if let after { seq = after } else { seq = try await spool.store.lastEventSeq() }
                    while !Task.isCancelled {
                        let page = try await spool.store.eventPage(after: seq, filter: filter, limit: 500)
                        for event in page.events { continuation.yield(FeedEvent(id: String(event.seq), type: event.type.rawValue, data: event.document)) }
                        if page.atEnd { try await Task.sleep(for: .milliseconds(200)) }
                        seq = page.next
                    }
                    continuation.finish()
                } catch { continuation.finish(throwing: error) }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
    func workers() async throws -> [WorkerDocument] {
        let now = Date()
        return try await spool.store.workers(tenant: nil).map { WorkerDocument($0, now: now) }
    }
    func topics() async throws -> [TopicDocument] { try await spool.topicOverview(tenant: nil) }
    func publish(topic: String, payload: JSONValue, attributes: [String: String], idempotencyKey: String?, tenant: String) async throws -> SpoolClient.Published {
        let result = try await spool.publish(topic: topic, payload: payload.jsonData, attributes: attributes, idempotencyKey: idempotencyKey, tenant: tenant)
        return SpoolClient.Published(event_id: result.event.id.description, topic: topic, job_ids: result.event.jobIDs.map(\.description),
                                     replayed: result.replayed)
    }
    func batch(_ id: JobID) async throws -> BatchDocument {
        guard let batch = try await spool.batch(id) else { throw CLIError("batch \(id) not found") }
        return BatchDocument(batch)
    }
}

/// Through a running gateway's HTTP API (`--url`, `SPOOL_URL`, `SPOOL_TOKEN`), with `SpoolClient`.
struct RemoteBackend: Backend {
    let client: SpoolClient

    /// For the event streams, which reconnect on their own through a gateway's restart.
    let streams: SpoolClient

    init(baseURL: String, token: String?) {
        client = SpoolClient(url: baseURL, token: token, httpClient: Self.httpClient)
        streams = SpoolClient(url: baseURL, token: token)
    }

    /// For one-shot requests: a gateway that refuses the connection is said at once (the shared
    /// client would retry the connection until the request's timeout, 30 s).
    static let httpClient: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.timeout.connect = .seconds(10)
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    func enqueue(_ job: NewJob) async throws -> JobDocument {
        let accepted = try await mapped { try await client.enqueue(job) }
        return try await self.job(try parseJobID(accepted.id))
    }
    func job(_ id: JobID) async throws -> JobDocument { try await mapped { try await client.job(id) } }
    func list(_ filter: JobFilter) async throws -> (jobs: [JobDocument], next: String?) {
        let page = try await mapped { try await client.list(filter) }
        return (page.jobs, page.nextCursor)
    }
    func cancel(_ id: JobID) async throws -> JobDocument { try await mapped { try await client.cancel(id) } }
    func retry(_ id: JobID) async throws -> JobDocument { try await mapped { try await client.retry(id) } }
    func queues() async throws -> [QueueDocument] { try await mapped { try await client.queues() } }
    func setPaused(_ paused: Bool, queue: String) async throws { try await mapped { try await client.setPaused(paused, queue: queue) } }
    func workers() async throws -> [WorkerDocument] { try await mapped { try await client.workers() } }
    func topics() async throws -> [TopicDocument] { try await mapped { try await client.topics() } }
    func publish(topic: String, payload: JSONValue, attributes: [String: String], idempotencyKey: String?, tenant: String) async throws -> SpoolClient.Published {
        try await mapped { try await client.publish(topic: topic, payload: payload, attributes: attributes, idempotencyKey: idempotencyKey) }
    }
    func batch(_ id: JobID) async throws -> BatchDocument { try await mapped { try await client.batch(id) } }
    func delete(_ id: JobID) async throws { try await mapped { try await client.delete(id) } }
    func retryFailed(queue: String) async throws -> Int { try await mapped { try await client.retryFailed(queue: queue) } }
    func purge(queue: String) async throws -> Int { try await mapped { try await client.purge(queue: queue) } }
    func feed(queue: String?, kind: String?, after: Int64?) -> AsyncThrowingStream<FeedEvent, any Error> {
        let events = streams.feed(queue: queue, kind: kind, after: after)
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    for try await event in events where event.type != "message" || !event.data.isEmpty {
                        continuation.yield(FeedEvent(id: event.id, type: event.type, data: JSONValue(json: Data(event.data.utf8)) ?? .string(event.data)))
                    }
                    continuation.finish()
                } catch let error as SpoolClientError { continuation.finish(throwing: CLIError(error.description)) }
                catch { continuation.finish(throwing: error) }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// The gateway's refusals, as the CLI prints errors.
    private func mapped<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let error as SpoolClientError { throw CLIError(error.description) }
    }
}
