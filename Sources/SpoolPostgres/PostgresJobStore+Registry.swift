import Foundation
import PostgresNIO
import SpoolCore

extension PostgresJobStore {
    // MARK: Worker registry

    public func recordWorker(_ worker: WorkerInfo) async throws {
        let logger = self.logger
        try await autocommit { client in
            try await client.query("""
                INSERT INTO spool_workers (id, tenant, name, host, pid, version, queues, kinds, concurrency, running,
                                           started_at, last_seen_at, expires_at)
                VALUES (\(worker.id), \(worker.tenant), \(worker.name), \(worker.host), \(worker.pid.map { Int32(clamping: $0) }), \(worker.version),
                        \(worker.queues), \(worker.kinds), \(Int32(clamping: worker.concurrency)), \(Int32(clamping: worker.running)),
                        \(worker.startedAt), \(worker.lastSeenAt), \(worker.expiresAt))
                ON CONFLICT (id) DO UPDATE SET name = excluded.name, host = excluded.host, pid = excluded.pid,
                    version = excluded.version, queues = excluded.queues, kinds = excluded.kinds,
                    concurrency = excluded.concurrency, running = excluded.running,
                    last_seen_at = excluded.last_seen_at, expires_at = excluded.expires_at
                WHERE spool_workers.tenant IS NOT DISTINCT FROM excluded.tenant
                """, logger: logger).drain()
        }
    }

    public func workers(tenant: String?) async throws -> [WorkerInfo] {
        let logger = self.logger
        return try await autocommit { client in
            var workers: [WorkerInfo] = []
            for try await row in try await client.query("""
                SELECT id, tenant, name, host, pid, version, queues, kinds, concurrency, running, started_at, last_seen_at, expires_at
                FROM spool_workers WHERE \(tenant)::text IS NULL OR tenant = \(tenant) ORDER BY started_at, id
                """, logger: logger) {
                let cells = row.makeRandomAccess()
                workers.append(WorkerInfo(
                    id: try cells[0].decode(String.self), tenant: try cells[1].decode(String?.self),
                    name: try cells[2].decode(String.self), host: try cells[3].decode(String?.self),
                    pid: try cells[4].decode(Int32?.self).map(Int.init), version: try cells[5].decode(String?.self),
                    queues: try cells[6].decode([String].self), kinds: try cells[7].decode([String].self),
                    concurrency: Int(try cells[8].decode(Int32.self)), running: Int(try cells[9].decode(Int32.self)),
                    startedAt: try cells[10].decode(Date.self), lastSeenAt: try cells[11].decode(Date.self),
                    expiresAt: try cells[12].decode(Date.self)))
            }
            return workers
        }
    }

    public func removeWorker(id: String) async throws {
        let logger = self.logger
        try await autocommit { client in
            try await client.query("DELETE FROM spool_workers WHERE id = \(id)", logger: logger).drain()
        }
    }

    public func pruneWorkers(expiredBefore: Date) async throws -> Int {
        let logger = self.logger
        return try await autocommit { client in
            var n = 0
            for try await _ in try await client.query(
                "DELETE FROM spool_workers WHERE expires_at < \(expiredBefore) RETURNING 1", logger: logger) { n += 1 }
            return n
        }
    }
}
