import Foundation
import PostgresNIO
import SpoolCore

extension PostgresJobStore {
    // MARK: Queue statistics

    public func recordQueueMinutes(_ rows: [QueueMinute], writer: String, batch: String) async throws {
        guard !rows.isEmpty else { return }
        let logger = self.logger
        // One statement for every row: arrays per column, unnested.
        let tenants = rows.map(\.tenant), queues = rows.map(\.queue), minutes = rows.map(\.minute)
        let completed = rows.map { Int64($0.completed) }, failed = rows.map { Int64($0.failed) }, retried = rows.map { Int64($0.retried) }
        // Histograms as text ('{1,2,...}') cast back, since unnest flattens nested arrays.
        let waits = rows.map { "{" + $0.wait.counts.map(String.init).joined(separator: ",") + "}" }
        let runs = rows.map { "{" + $0.run.counts.map(String.init).joined(separator: ",") + "}" }
        try await autocommit { client in
            try await client.query("""
                INSERT INTO spool_queue_minutes (tenant, queue, minute, writer, batch, completed, failed, retried, wait, run)
                SELECT t, q, m, \(writer), \(batch), c, f, r, w::bigint[], u::bigint[]
                FROM unnest(\(tenants)::text[], \(queues)::text[], \(minutes)::bigint[], \(completed)::bigint[], \(failed)::bigint[],
                            \(retried)::bigint[], \(waits)::text[], \(runs)::text[]) AS x(t, q, m, c, f, r, w, u)
                ON CONFLICT DO NOTHING
                """, logger: logger).drain()
        }
    }

    public func queueMinutes(from: Int64, to: Int64, tenant: String?, queue: String?) async throws -> [QueueMinute] {
        let logger = self.logger
        return try await autocommit { client in
            var rows: [QueueMinute] = []
            for try await row in try await client.query("""
                SELECT tenant, queue, minute, completed, failed, retried, wait, run FROM spool_queue_minutes
                WHERE minute >= \(from) AND minute < \(to) AND (\(tenant)::text IS NULL OR tenant = \(tenant))
                  AND (\(queue)::text IS NULL OR queue = \(queue))
                """, logger: logger) {
                let cells = row.makeRandomAccess()
                let wait = try cells[6].decode([Int64].self).map(Int.init), run = try cells[7].decode([Int64].self).map(Int.init)
                rows.append(QueueMinute(
                    tenant: try cells[0].decode(String.self), queue: try cells[1].decode(String.self), minute: try cells[2].decode(Int64.self),
                    completed: Int(try cells[3].decode(Int32.self)), failed: Int(try cells[4].decode(Int32.self)),
                    retried: Int(try cells[5].decode(Int32.self)),
                    wait: LatencyHistogram(counts: wait) ?? LatencyHistogram(), run: LatencyHistogram(counts: run) ?? LatencyHistogram()))
            }
            return rows
        }
    }

    public func pruneQueueMinutes(before minute: Int64) async throws -> Int {
        let logger = self.logger
        return try await autocommit { client in
            var n = 0
            for try await _ in try await client.query(
                "DELETE FROM spool_queue_minutes WHERE minute < \(minute) RETURNING 1", logger: logger) { n += 1 }
            return n
        }
    }
}
