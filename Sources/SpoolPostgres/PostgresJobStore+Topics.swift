import Foundation
import Logging
import PostgresNIO
import SpoolCore

extension PostgresJobStore {
    // MARK: Topics

    public func saveSubscription(_ subscription: TopicSubscription) async throws {
        guard let tenant = subscription.tenant else { throw SpoolError.invalid(field: "tenant", reason: "a stored subscription has a tenant") }
        try subscription.validate()
        let filter = String(decoding: try JSON.encode(subscription.filter), as: UTF8.self)
        let logger = self.logger
        try await autocommit { client in
            try await client.query("""
                INSERT INTO spool_topic_subscriptions (tenant, topic, name, queue, kind, filter, created_at)
                VALUES (\(tenant), \(subscription.topic), \(subscription.name), \(subscription.queue), \(subscription.kind), \(filter),
                        \(subscription.createdAt))
                ON CONFLICT (tenant, topic, name) DO UPDATE SET queue = excluded.queue, kind = excluded.kind, filter = excluded.filter
                """, logger: logger).drain()
        }
    }

    public func removeSubscription(tenant: String, topic: String, name: String) async throws -> Bool {
        let logger = self.logger
        return try await autocommit { client in
            var removed = false
            for try await _ in try await client.query("""
                DELETE FROM spool_topic_subscriptions WHERE tenant = \(tenant) AND topic = \(topic) AND name = \(name) RETURNING 1
                """, logger: logger) { removed = true }
            return removed
        }
    }

    public func subscriptions(tenant: String?, topic: String?) async throws -> [TopicSubscription] {
        let logger = self.logger
        return try await autocommit { client in
            var found: [TopicSubscription] = []
            for try await (tenant, topic, name, queue, kind, filter, createdAt) in try await client.query("""
                SELECT tenant, topic, name, queue, kind, filter, created_at FROM spool_topic_subscriptions
                WHERE (\(tenant)::text IS NULL OR tenant = \(tenant)) AND (\(topic)::text IS NULL OR topic = \(topic))
                ORDER BY tenant, topic, name
                """, logger: logger).decode((String, String, String, String, String, String, Date).self) {
                found.append(TopicSubscription(tenant: tenant, topic: topic, name: name, queue: queue, kind: kind,
                                               filter: try JSON.decode([String: [String]].self, from: Data(filter.utf8)), createdAt: createdAt))
            }
            return found
        }
    }

    public func publish(_ event: TopicEvent, jobs: [NewJob], subscribers: [String], defaults: [String: JobDefaults],
                        depthLimits: [String: Int]) async throws -> PublishResult {
        try event.validate()
        for job in jobs { try job.validateNames() }
        let attributes = String(decoding: try JSON.encode(event.attributes), as: UTF8.self)
        let logger = self.logger
        return try await settlingKeyRaces {
            try await self.transaction { connection, changes in
                if let key = event.idempotencyKey {
                    for try await row in try await connection.query("""
                        SELECT \(unescaped: Self.eventColumns) FROM spool_topic_events
                        WHERE tenant = \(event.tenant) AND topic = \(event.topic) AND idempotency_key = \(key)
                        """, logger: logger) {
                        let existing = try Self.eventRow(row)
                        guard existing.isSamePublish(as: event) else { throw SpoolError.idempotencyConflict(key: key, existing: existing.id) }
                        return PublishResult(event: existing, replayed: true)
                    }
                }
                let results = jobs.isEmpty ? [] : try await self.enqueue(jobs, defaults: defaults, depthLimits: depthLimits, connection, changes)
                var stored = event
                stored.jobIDs = results.map(\.job.id)
                let payload = String(decoding: event.payload, as: UTF8.self)
                let ids = PGRows.jsonText(stored.jobIDs.map(\.description))
                try await connection.query("""
                    INSERT INTO spool_topic_events (id, tenant, topic, payload, attributes, idempotency_key, job_ids, created_at)
                    VALUES (\(event.id.uuid), \(event.tenant), \(event.topic), \(payload), \(attributes), \(event.idempotencyKey), \(ids),
                            \(event.createdAt))
                    """, logger: logger)
                let names = [""] + subscribers
                try await connection.query("""
                    INSERT INTO spool_topic_counts (tenant, topic, subscriber, n, last_at)
                    SELECT \(event.tenant), \(event.topic), s, 1, \(event.createdAt) FROM unnest(\(names)::text[]) AS s ORDER BY s
                    ON CONFLICT (tenant, topic, subscriber) DO UPDATE SET n = spool_topic_counts.n + 1, last_at = excluded.last_at
                    """, logger: logger)
                return PublishResult(event: stored, replayed: false)
            }
        }
    }

    static let eventColumns = "id, tenant, topic, payload, attributes, idempotency_key, job_ids, created_at"

    static func eventRow(_ row: PostgresRow) throws -> TopicEvent {
        let (id, tenant, topic, payload, attributes, key, jobs, createdAt) = try row.decode(
            (UUID, String, String, String, String, String?, String, Date).self)
        return TopicEvent(id: JobID(uuid: id), tenant: tenant, topic: topic, payload: Data(payload.utf8),
                          attributes: try JSON.decode([String: String].self, from: Data(attributes.utf8)), idempotencyKey: key,
                          jobIDs: try JSON.decode([String].self, from: Data(jobs.utf8)).compactMap(JobID.init), createdAt: createdAt)
    }

    public func topicEvents(tenant: String, topic: String, since: Date, limit: Int) async throws -> [TopicEvent] {
        let logger = self.logger
        let limit = Int64(max(1, min(limit, 10_000)))
        return try await autocommit { client in
            var events: [TopicEvent] = []
            for try await row in try await client.query("""
                SELECT \(unescaped: Self.eventColumns) FROM spool_topic_events
                WHERE tenant = \(tenant) AND topic = \(topic) AND created_at >= \(since) ORDER BY created_at, id LIMIT \(limit)
                """, logger: logger) { events.append(try Self.eventRow(row)) }
            return events
        }
    }

    public func topicSummaries(tenant: String?) async throws -> [TopicSummary] {
        let logger = self.logger
        return try await autocommit { client in
            var summaries: [String: TopicSummary] = [:]
            for try await (tenant, topic, subscriber, n, lastAt) in try await client.query("""
                SELECT tenant, topic, subscriber, n, last_at FROM spool_topic_counts WHERE \(tenant)::text IS NULL OR tenant = \(tenant)
                """, logger: logger).decode((String, String, String, Int64, Date).self) {
                var summary = summaries["\(tenant)/\(topic)"] ?? TopicSummary(tenant: tenant, topic: topic, events: 0, jobs: [:], lastPublishedAt: nil)
                if subscriber.isEmpty {
                    summary.events = Int(n)
                    summary.lastPublishedAt = lastAt
                } else {
                    summary.jobs[subscriber] = Int(n)
                }
                summaries["\(tenant)/\(topic)"] = summary
            }
            return summaries.values.sorted { ($0.tenant, $0.topic) < ($1.tenant, $1.topic) }
        }
    }
}
