import Foundation
import GRDB
import SpoolCore

extension SQLiteJobStore {
    // MARK: Queue statistics

    public func recordQueueMinutes(_ rows: [QueueMinute], writer writerID: String, batch: String) async throws {
        guard !rows.isEmpty else { return }
        try await writer.write(durable: false, atomic: true) { db, _ in
            let statement = try db.cachedStatement(sql: """
                INSERT OR IGNORE INTO queue_minutes (tenant, queue, minute, writer, batch, completed, failed, retried, wait, run)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """)
            for row in rows {
                try statement.execute(arguments: [row.tenant, row.queue, row.minute, writerID, batch, row.completed, row.failed, row.retried,
                                                  Self.histogramText(row.wait), Self.histogramText(row.run)])
            }
        }
    }

    public func queueMinutes(from: Int64, to: Int64, tenant: String?, queue: String?) async throws -> [QueueMinute] {
        try await read { db in
            try Row.fetchAll(db.cachedStatement(sql: """
                SELECT tenant, queue, minute, completed, failed, retried, wait, run FROM queue_minutes
                WHERE minute >= ?1 AND minute < ?2 AND (?3 IS NULL OR tenant = ?3) AND (?4 IS NULL OR queue = ?4)
                """), arguments: [from, to, tenant, queue]).map { row in
                // A row whose histogram does not parse still counts its jobs.
                QueueMinute(tenant: row[0], queue: row[1], minute: row[2], completed: row[3], failed: row[4], retried: row[5],
                            wait: Self.histogram(row[6]), run: Self.histogram(row[7]))
            }
        }
    }

    public func pruneQueueMinutes(before minute: Int64) async throws -> Int {
        try await writer.write(durable: false, atomic: true) { db, _ in
            try db.cachedStatement(sql: "DELETE FROM queue_minutes WHERE minute < ?").execute(arguments: [minute])
            return db.changesCount
        }
    }

    static func histogramText(_ histogram: LatencyHistogram) -> String {
        "[" + histogram.counts.map(String.init).joined(separator: ",") + "]"
    }

    static func histogram(_ text: String) -> LatencyHistogram {
        let counts = (try? JSONDecoder().decode([Int].self, from: Data(text.utf8))) ?? []
        return LatencyHistogram(counts: counts) ?? LatencyHistogram()
    }
}
