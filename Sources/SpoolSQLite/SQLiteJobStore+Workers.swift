import Foundation
import GRDB
import SpoolCore

extension SQLiteJobStore {
    // MARK: Worker registry

    public func recordWorker(_ worker: WorkerInfo) async throws {
        try await writer.write(durable: false, atomic: true) { db, _ in
            try db.cachedStatement(sql: """
                INSERT INTO workers (id, tenant, name, host, pid, version, queues, kinds, concurrency, running,
                                     started_at, last_seen_at, expires_at)
                VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                ON CONFLICT (id) DO UPDATE SET name = ?3, host = ?4, pid = ?5, version = ?6, queues = ?7, kinds = ?8,
                    concurrency = ?9, running = ?10, last_seen_at = ?12, expires_at = ?13
                WHERE workers.tenant IS ?2
                """).execute(arguments: [
                    worker.id, worker.tenant, worker.name, worker.host, worker.pid, worker.version,
                    Rows.jsonText(worker.queues), Rows.jsonText(worker.kinds), worker.concurrency, worker.running,
                    Rows.micros(worker.startedAt), Rows.micros(worker.lastSeenAt), Rows.micros(worker.expiresAt),
                ])
        }
    }

    public func workers(tenant: String?) async throws -> [WorkerInfo] {
        try await read { db in
            try Row.fetchAll(db.cachedStatement(sql: """
                SELECT id, tenant, name, host, pid, version, queues, kinds, concurrency, running, started_at, last_seen_at, expires_at
                FROM workers WHERE ?1 IS NULL OR tenant = ?1 ORDER BY started_at, id
                """), arguments: [tenant]).map { row in
                WorkerInfo(
                    id: row[0], tenant: row[1], name: row[2], host: row[3], pid: row[4], version: row[5],
                    queues: (try? Rows.strings(row[6])) ?? [], kinds: (try? Rows.strings(row[7])) ?? [], concurrency: row[8], running: row[9],
                    startedAt: Rows.date(row[10]), lastSeenAt: Rows.date(row[11]), expiresAt: Rows.date(row[12]))
            }
        }
    }

    public func removeWorker(id: String) async throws {
        try await writer.write(durable: false, atomic: true) { db, _ in
            try db.cachedStatement(sql: "DELETE FROM workers WHERE id = ?").execute(arguments: [id])
        }
    }

    public func pruneWorkers(expiredBefore: Date) async throws -> Int {
        try await writer.write(durable: false, atomic: true) { db, _ in
            try db.cachedStatement(sql: "DELETE FROM workers WHERE expires_at < ?").execute(arguments: [Rows.micros(expiredBefore)])
            return db.changesCount
        }
    }
}
