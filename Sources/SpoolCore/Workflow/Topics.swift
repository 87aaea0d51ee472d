import Foundation

/// A subscriber of a topic: every event published to the topic (that passes its filter)
/// becomes one job of `kind` on `queue`, which retries, fails and is retried on its own.
public struct TopicSubscription: Sendable, Hashable, Codable {
    /// The tenant whose events it receives; `nil` for a subscription of the config file, which
    /// receives every tenant's (each job is its publisher's tenant's).
    public var tenant: String?
    public var topic: String
    public var name: String
    public var queue: String
    public var kind: String
    /// Attribute name → accepted values: an event matches when each named attribute has one
    /// of its values. Empty: every event.
    public var filter: [String: [String]]
    public var createdAt: Date

    public init(tenant: String?, topic: String, name: String, queue: String = "default", kind: String,
                filter: [String: [String]] = [:], createdAt: Date = Date()) {
        self.tenant = tenant; self.topic = topic; self.name = name; self.queue = queue; self.kind = kind
        self.filter = filter; self.createdAt = createdAt
    }

    public func matches(_ attributes: [String: String]) -> Bool {
        filter.allSatisfy { name, values in attributes[name].map(values.contains) ?? false }
    }

    /// The idempotency key of this subscriber's job for `event`: a replay or a retried publish
    /// never makes a second one.
    public func jobKey(for event: JobID) -> String { "event:\(event):\(name)" }

    public func validate() throws(SpoolError) {
        try TopicEvent.validateTopic(topic)
        guard NewJob.isValidName(name) else { throw .invalid(field: "name", reason: "must be 1-64 characters of A-Z a-z 0-9 _ . - :") }
        let probe = NewJob(queue: queue, kind: kind, tenant: tenant ?? NewJob.defaultTenant)
        try probe.validateNames()
        guard filter.count <= 32, filter.allSatisfy({ NewJob.isValidName($0.key) && !$0.value.isEmpty && $0.value.count <= 100 }) else {
            throw .invalid(field: "filter", reason: "at most 32 attributes (names of A-Z a-z 0-9 _ . - :), each with 1-100 accepted values")
        }
    }
}

/// An event published to a topic, kept for the event retention window.
public struct TopicEvent: Sendable, Hashable {
    public var id: JobID
    public var tenant: String
    public var topic: String
    /// JSON text: the payload of every subscriber's job.
    public var payload: Data
    public var attributes: [String: String]
    public var idempotencyKey: String?
    /// The jobs it made, one per matching subscriber.
    public var jobIDs: [JobID]
    public var createdAt: Date

    public init(id: JobID, tenant: String, topic: String, payload: Data, attributes: [String: String], idempotencyKey: String?,
                jobIDs: [JobID] = [], createdAt: Date) {
        self.id = id; self.tenant = tenant; self.topic = topic; self.payload = payload; self.attributes = attributes
        self.idempotencyKey = idempotencyKey; self.jobIDs = jobIDs; self.createdAt = createdAt
    }

    public static func validateTopic(_ topic: String) throws(SpoolError) {
        guard NewJob.isValidName(topic) else { throw .invalid(field: "topic", reason: "must be 1-64 characters of A-Z a-z 0-9 _ . - :") }
    }

    public func validate() throws(SpoolError) {
        try Self.validateTopic(topic)
        guard attributes.count <= 32, attributes.allSatisfy({ NewJob.isValidName($0.key) && $0.value.utf8.count <= 256 }) else {
            throw .invalid(field: "attributes", reason: "at most 32 string attributes (names of A-Z a-z 0-9 _ . - :, values up to 256 bytes)")
        }
        if let key = idempotencyKey, key.isEmpty || key.utf8.count > 255 { throw .invalid(field: "idempotency_key", reason: "must be 1-255 bytes") }
        guard (try? JSONSerialization.jsonObject(with: payload, options: [.fragmentsAllowed])) != nil else {
            throw .invalid(field: "payload", reason: "must be valid JSON")
        }
    }

    /// Whether a publish with the same idempotency key is this one again.
    public func isSamePublish(as other: TopicEvent) -> Bool {
        guard topic == other.topic, attributes == other.attributes else { return false }
        return payload == other.payload || JSONValue(json: payload) == JSONValue(json: other.payload)
    }
}

/// What a publish gave back.
public struct PublishResult: Sendable, Hashable {
    public var event: TopicEvent
    /// `true` when the idempotency key matched an event published before: nothing new was written.
    public var replayed: Bool
    public init(event: TopicEvent, replayed: Bool) { self.event = event; self.replayed = replayed }
}

/// A topic's figures.
public struct TopicSummary: Sendable, Hashable {
    public var tenant: String
    public var topic: String
    /// Events published, ever.
    public var events: Int
    /// Jobs made per subscriber, ever.
    public var jobs: [String: Int]
    public var lastPublishedAt: Date?
    public init(tenant: String, topic: String, events: Int, jobs: [String: Int], lastPublishedAt: Date?) {
        self.tenant = tenant; self.topic = topic; self.events = events; self.jobs = jobs; self.lastPublishedAt = lastPublishedAt
    }
}

/// A subscriber as the API and the CLI show it.
public struct SubscriberDocument: Sendable, Codable, Hashable {
    public var name: String
    public var queue: String
    public var kind: String
    public var filter: [String: [String]]
    /// `config` (the config file; every tenant's events) or `api`.
    public var source: String
    public var tenant: String?
    /// Jobs made for it, ever (of the tenants the caller sees).
    public var jobs: Int

    public init(_ s: TopicSubscription, jobs: Int) {
        name = s.name; queue = s.queue; kind = s.kind; filter = s.filter
        source = s.tenant == nil ? "config" : "api"; tenant = s.tenant; self.jobs = jobs
    }
}

/// A topic as `GET /v1/topics` and `spool topics` show it.
public struct TopicDocument: Sendable, Codable, Hashable {
    public var topic: String
    /// Events published, ever.
    public var events: Int
    public var last_published_at: String?
    public var subscribers: [SubscriberDocument]
}

extension Spool {
    /// Every topic with subscribers or events, as `tenant` (`nil`: every tenant) sees it.
    public func topicOverview(tenant: String?) async throws -> [TopicDocument] {
        let summaries = try await store.topicSummaries(tenant: tenant)
        let subscriptions = try await subscriptions(tenant: tenant)
        let names = Set(summaries.map(\.topic)).union(subscriptions.map(\.topic))
        return names.sorted().map { topic in
            let mine = summaries.filter { $0.topic == topic }
            var jobs: [String: Int] = [:]
            for summary in mine { for (name, n) in summary.jobs { jobs[name, default: 0] += n } }
            return TopicDocument(
                topic: topic, events: mine.reduce(0) { $0 + $1.events },
                last_published_at: mine.compactMap(\.lastPublishedAt).max().map(Timestamp.format),
                subscribers: subscriptions.filter { $0.topic == topic }.map { SubscriberDocument($0, jobs: jobs[$0.name] ?? 0) })
        }
    }
}
