import Foundation
import GRDB
import SpoolCore

extension SQLiteJobStore {
    // MARK: Topics

    public func saveSubscription(_ subscription: TopicSubscription) async throws {
        guard let tenant = subscription.tenant else { throw SpoolError.invalid(field: "tenant", reason: "a stored subscription has a tenant") }
        try subscription.validate()
        let filter = String(decoding: try JSON.encode(subscription.filter), as: UTF8.self)
        try await writer.write(atomic: true) { db, _ in
            try db.execute(sql: """
                INSERT INTO topic_subscriptions (tenant, topic, name, queue, kind, filter, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (tenant, topic, name) DO UPDATE SET queue = excluded.queue, kind = excluded.kind, filter = excluded.filter
                """, arguments: [tenant, subscription.topic, subscription.name, subscription.queue, subscription.kind, filter,
                                 Rows.micros(subscription.createdAt)])
        }
    }

    public func removeSubscription(tenant: String, topic: String, name: String) async throws -> Bool {
        try await writer.write(atomic: true) { db, _ in
            try db.execute(sql: "DELETE FROM topic_subscriptions WHERE tenant = ? AND topic = ? AND name = ?", arguments: [tenant, topic, name])
            return db.changesCount > 0
        }
    }

    public func subscriptions(tenant: String?, topic: String?) async throws -> [TopicSubscription] {
        try await read { db in
            try Row.fetchAll(db, sql: """
                SELECT tenant, topic, name, queue, kind, filter, created_at FROM topic_subscriptions
                WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR topic = ?2) ORDER BY tenant, topic, name
                """, arguments: [tenant, topic]).map { row in
                TopicSubscription(tenant: row[0], topic: row[1], name: row[2], queue: row[3], kind: row[4],
                                  filter: try JSON.decode([String: [String]].self, from: Data((row[5] as String).utf8)),
                                  createdAt: Rows.date(row[6]))
            }
        }
    }

    public func publish(_ event: TopicEvent, jobs: [NewJob], subscribers: [String], defaults: [String: JobDefaults],
                        depthLimits: [String: Int]) async throws -> PublishResult {
        try event.validate()
        for job in jobs { try job.validateNames() }
        let attributes = String(decoding: try JSON.encode(event.attributes), as: UTF8.self)
        return try await writer.write() { db, batch in
            if let key = event.idempotencyKey, let row = try Row.fetchOne(db, sql: """
                SELECT \(Self.eventColumns) FROM topic_events WHERE tenant = ? AND topic = ? AND idempotency_key = ?
                """, arguments: [event.tenant, event.topic, key]) {
                let existing = try Self.eventRow(row)
                guard existing.isSamePublish(as: event) else { throw SpoolError.idempotencyConflict(key: key, existing: existing.id) }
                return PublishResult(event: existing, replayed: true)
            }
            let results = jobs.isEmpty ? [] : try Self.enqueue(jobs, defaults: defaults, depthLimits: depthLimits, db, batch)
            var stored = event
            stored.jobIDs = results.map(\.job.id)
            try db.execute(sql: """
                INSERT INTO topic_events (id, tenant, topic, payload, attributes, idempotency_key, job_ids, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                """, arguments: [event.id.description, event.tenant, event.topic, String(decoding: event.payload, as: UTF8.self), attributes,
                                 event.idempotencyKey, Rows.jsonText(stored.jobIDs.map(\.description)), Rows.micros(event.createdAt)])
            let count = try db.cachedStatement(sql: """
                INSERT INTO topic_counts (tenant, topic, subscriber, n, last_at) VALUES (?, ?, ?, 1, ?)
                ON CONFLICT (tenant, topic, subscriber) DO UPDATE SET n = n + 1, last_at = excluded.last_at
                """)
            for subscriber in [""] + subscribers {
                try count.execute(arguments: [event.tenant, event.topic, subscriber, Rows.micros(event.createdAt)])
            }
            return PublishResult(event: stored, replayed: false)
        }
    }

    static let eventColumns = "id, tenant, topic, payload, attributes, idempotency_key, job_ids, created_at"

    static func eventRow(_ row: Row) throws -> TopicEvent {
        guard let id = JobID(row[0] as String) else { throw Rows.CorruptRow(description: "bad event id") }
        return TopicEvent(id: id, tenant: row[1], topic: row[2], payload: Data((row[3] as String).utf8),
                          attributes: try JSON.decode([String: String].self, from: Data((row[4] as String).utf8)),
                          idempotencyKey: row[5], jobIDs: try Rows.strings(row[6]).compactMap(JobID.init), createdAt: Rows.date(row[7]))
    }

    public func topicEvents(tenant: String, topic: String, since: Date, limit: Int) async throws -> [TopicEvent] {
        try await read { db in
            try Row.fetchAll(db, sql: """
                SELECT \(Self.eventColumns) FROM topic_events WHERE tenant = ? AND topic = ? AND created_at >= ?
                ORDER BY created_at, id LIMIT ?
                """, arguments: [tenant, topic, Rows.micros(since), max(1, min(limit, 10_000))]).map(Self.eventRow)
        }
    }

    public func topicSummaries(tenant: String?) async throws -> [TopicSummary] {
        try await read { db in
            var summaries: [String: TopicSummary] = [:]
            for row in try Row.fetchAll(db, sql: """
                SELECT tenant, topic, subscriber, n, last_at FROM topic_counts WHERE ?1 IS NULL OR tenant = ?1
                """, arguments: [tenant]) {
                let tenant: String = row[0], topic: String = row[1], subscriber: String = row[2], n: Int = row[3]
                var summary = summaries["\(tenant)/\(topic)"] ?? TopicSummary(tenant: tenant, topic: topic, events: 0, jobs: [:], lastPublishedAt: nil)
                if subscriber.isEmpty {
                    summary.events = n
                    summary.lastPublishedAt = Rows.date(row[4])
                } else {
                    summary.jobs[subscriber] = n
                }
                summaries["\(tenant)/\(topic)"] = summary
            }
            return summaries.values.sorted { ($0.tenant, $0.topic) < ($1.tenant, $1.topic) }
        }
    }
}
