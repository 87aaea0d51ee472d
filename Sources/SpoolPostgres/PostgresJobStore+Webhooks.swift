import Foundation
import Logging
import PostgresNIO
import SpoolCore

extension PostgresJobStore {
    // MARK: Webhooks

    /// Schedules the webhook of a job that just reached a terminal state: a delivery job
    /// carrying its document, and the delivery's record, in the caller's transaction.
    func scheduleWebhook(_ connection: PostgresConnection, _ changes: ChangeSet, _ id: JobID) async throws {
        let job = try await fetchJob(connection, id)
        guard let request = Webhook.deliveryJob(for: job), let url = job.callbackURL else { return }
        let delivery = Job(new: request, defaults: nil, now: Date())
        try await insert([delivery], connection, changes)
        try await connection.query("""
            INSERT INTO spool_webhook_deliveries (id, job_id, tenant, url, event, created_at)
            VALUES (\(delivery.id.uuid), \(id.uuid), \(job.tenant), \(url), \(Webhook.eventType(job.state)), now())
            """, logger: logger)
    }

    public func webhookDeliveries(of job: JobID, tenant: String?) async throws -> [WebhookDelivery] {
        let logger = self.logger
        return try await autocommit { client in
            var deliveries: [WebhookDelivery] = []
            for try await (id, url, event, createdAt, attempts, state) in try await client.query("""
                SELECT d.id, d.url, d.event, d.created_at, d.attempts::text, j.state
                FROM spool_webhook_deliveries d LEFT JOIN spool_jobs j ON j.id = d.id
                WHERE d.job_id = \(job.uuid) AND (\(tenant)::text IS NULL OR d.tenant = \(tenant))
                ORDER BY d.id
                """, logger: logger).decode((UUID, String, String, Date, String, String?).self) {
                deliveries.append(WebhookDelivery(
                    id: JobID(uuid: id), jobID: job, url: url, event: event, createdAt: createdAt,
                    state: state.flatMap(JobState.init(rawValue:)),
                    attempts: try JSON.decode([WebhookAttempt].self, from: Data(attempts.utf8))))
            }
            return deliveries
        }
    }

    public func recordWebhookAttempt(_ attempt: WebhookAttempt, delivery: JobID) async throws {
        let text = String(decoding: try JSON.encode(attempt), as: UTF8.self)
        let logger = self.logger
        try await autocommit { client in
            try await client.query("""
                UPDATE spool_webhook_deliveries SET attempts = attempts || jsonb_build_array(\(text)::jsonb) WHERE id = \(delivery.uuid)
                """, logger: logger).drain()
        }
    }

    public func webhookSecret(tenant: String) async throws -> String {
        let logger = self.logger
        let fresh = Webhook.makeSecret()
        return try await transaction { connection, _ in
            try await connection.query("""
                INSERT INTO spool_webhook_secrets (tenant, secret) VALUES (\(tenant), \(fresh)) ON CONFLICT (tenant) DO NOTHING
                """, logger: logger)
            var secret = ""
            for try await s in try await connection.query(
                "SELECT secret FROM spool_webhook_secrets WHERE tenant = \(tenant)", logger: logger
            ).decode(String.self) { secret = s }
            return secret
        }
    }

    // MARK: Leadership

    public func claimLeadership(of duty: String, holder: String, for ttl: Duration) async throws -> Bool {
        let logger = self.logger
        let ttlMs = Int64(ttl.seconds * 1000)
        return try await transaction { connection, _ in
            var won = false
            for try await _ in try await connection.query("""
                INSERT INTO spool_leaders (duty, holder, expires_at) VALUES (\(duty), \(holder), now() + \(ttlMs) * interval '1 millisecond')
                ON CONFLICT (duty) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                WHERE spool_leaders.holder = excluded.holder OR spool_leaders.expires_at < now()
                RETURNING holder
                """, logger: logger) { won = true }
            return won
        }
    }

    public func resignLeadership(of duty: String, holder: String) async throws {
        let logger = self.logger
        try await autocommit { client in
            try await client.query("DELETE FROM spool_leaders WHERE duty = \(duty) AND holder = \(holder)", logger: logger).drain()
        }
    }
}
