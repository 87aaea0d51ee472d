import Foundation
import GRDB
import SpoolCore
import Synchronization

extension SQLiteJobStore {
    // MARK: Webhooks

    /// Schedules the webhook of a job that just reached a terminal `state`, if it has a
    /// callback URL: a delivery job (carrying the job's document as it is now) plus its
    /// record, in the caller's transaction.
    static func scheduleWebhook(_ db: Database, _ batch: GroupCommitWriter.Batch, _ key: ChangeSet.JobKey,
                                        url: String?, state: JobState) throws {
        guard url != nil else { return }
        let job = try fetchJob(db, key.id, tenant: nil)
        guard let request = Webhook.deliveryJob(for: job), let url = job.callbackURL else { return }
        let now = Date()
        let delivery = Job(new: request, defaults: nil, now: now)
        try insert([delivery], db, batch)
        try db.cachedStatement(sql: """
            INSERT INTO webhook_deliveries(id, job_id, tenant, url, event, created_at) VALUES (?, ?, ?, ?, ?, ?)
            """).execute(arguments: [delivery.id.description, key.id.description, key.tenant, url,
                                     Webhook.eventType(job.state), Rows.micros(now)])
    }

    public func webhookDeliveries(of job: JobID, tenant: String?) async throws -> [WebhookDelivery] {
        try await read { db in
            let rows = try Row.fetchAll(
                db.cachedStatement(sql: """
                    SELECT d.id, d.url, d.event, d.created_at, d.attempts, j.state
                    FROM webhook_deliveries d LEFT JOIN jobs j ON j.id = d.id
                    WHERE d.job_id = ? AND (?2 IS NULL OR d.tenant = ?2)
                    ORDER BY d.id
                    """),
                arguments: [job.description, tenant])
            return try rows.map { row in
                guard let id = JobID(row[0] as String) else { throw Rows.CorruptRow(description: "bad delivery id") }
                let attempts = try JSON.decode([WebhookAttempt].self, from: Data((row[4] as String).utf8))
                return WebhookDelivery(id: id, jobID: job, url: row[1], event: row[2], createdAt: Rows.date(row[3]),
                                       state: (row[5] as String?).flatMap(JobState.init(rawValue:)), attempts: attempts)
            }
        }
    }

    public func recordWebhookAttempt(_ attempt: WebhookAttempt, delivery: JobID) async throws {
        let text = String(decoding: try JSON.encode(attempt), as: UTF8.self)
        try await writer.write(durable: false) { db, _ in
            try db.cachedStatement(sql: "UPDATE webhook_deliveries SET attempts = json_insert(attempts, '$[#]', json(?)) WHERE id = ?")
                .execute(arguments: [text, delivery.description])
        }
    }

    public func webhookSecret(tenant: String) async throws -> String {
        if let existing = try await read({ db in
            try String.fetchOne(db.cachedStatement(sql: "SELECT secret FROM webhook_secrets WHERE tenant = ?"), arguments: [tenant])
        }) { return existing }
        return try await writer.write(atomic: true) { db, _ in
            try db.execute(sql: "INSERT INTO webhook_secrets(tenant, secret) VALUES (?, ?) ON CONFLICT(tenant) DO NOTHING",
                           arguments: [tenant, Webhook.makeSecret()])
            return try String.fetchOne(db, sql: "SELECT secret FROM webhook_secrets WHERE tenant = ?", arguments: [tenant]) ?? ""
        }
    }
}
