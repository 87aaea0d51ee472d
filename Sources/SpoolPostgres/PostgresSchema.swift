import Logging
import PostgresNIO
import SpoolCore

/// The versioned schema. Migrations are append-only: never edit one that has shipped.
///
/// Every process may call ``migrate(_:logger:)`` as it starts: the whole migration runs in one
/// transaction under an advisory lock, so concurrent starters wait for the first and then find
/// nothing left to do.
enum PostgresSchema {
    /// Arbitrary but fixed: the advisory lock migrations take.
    static let migrationLock: Int64 = 0x5350_4F4F_4C4D_4947  // "SPOOLMIG"

    static let migrations: [(version: Int, name: String, sql: [String])] = [
        (1, "jobs, queues, counts, events, webhooks, leaders", [
            """
            CREATE TABLE spool_jobs (
                seq bigint GENERATED ALWAYS AS IDENTITY,   -- insertion order: FIFO and cursors
                id uuid PRIMARY KEY,                       -- UUIDv7, time-ordered
                tenant text NOT NULL,
                queue text NOT NULL,
                kind text NOT NULL,
                payload text NOT NULL,                     -- JSON text, kept byte for byte
                priority integer NOT NULL,
                state text NOT NULL,
                attempt integer NOT NULL DEFAULT 0,
                max_attempts integer NOT NULL,
                run_at timestamptz NOT NULL,
                timeout_ms bigint NOT NULL,
                progress_percent double precision,
                progress_message text,
                result text,
                errors jsonb NOT NULL DEFAULT '[]',
                created_at timestamptz NOT NULL,
                started_at timestamptz,
                finished_at timestamptz,
                idempotency_key text,
                callback_url text,
                tags jsonb NOT NULL DEFAULT '[]',
                worker_id text,
                lease_token text,
                lease_expires_at timestamptz
            )
            """,
            "CREATE UNIQUE INDEX spool_jobs_seq ON spool_jobs (seq)",
            // Leasing reads only ready jobs: this index never holds finished ones.
            "CREATE INDEX spool_jobs_ready ON spool_jobs (queue, priority DESC, seq) WHERE state = 'pending'",
            "CREATE INDEX spool_jobs_scheduled ON spool_jobs (queue, run_at) WHERE state = 'scheduled'",
            "CREATE INDEX spool_jobs_leases ON spool_jobs (lease_expires_at) WHERE state = 'processing'",
            "CREATE INDEX spool_jobs_by_queue ON spool_jobs (queue, seq)",
            "CREATE INDEX spool_jobs_dead ON spool_jobs (seq) WHERE state = 'failed'",
            "CREATE UNIQUE INDEX spool_jobs_idempotency ON spool_jobs (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL",
            "CREATE TABLE spool_queues (name text PRIMARY KEY, paused boolean NOT NULL DEFAULT false)",
            // Jobs per queue, tenant and state: every transaction appends its changes to
            // spool_count_deltas (no row is shared, so no transaction waits for another) and
            // they are folded into spool_queue_counts every second. Counts are the sum of both.
            """
            CREATE TABLE spool_queue_counts (
                queue text NOT NULL, tenant text NOT NULL, state text NOT NULL, n bigint NOT NULL,
                PRIMARY KEY (queue, tenant, state)
            )
            """,
            """
            CREATE TABLE spool_count_deltas (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                queue text NOT NULL, tenant text NOT NULL, state text NOT NULL, n bigint NOT NULL
            )
            """,
            "CREATE INDEX spool_count_deltas_queue ON spool_count_deltas (queue)",
            // One row per transaction that had events, inserted just before it commits. Readers
            // take rows in seq order and wait at a gap (a transaction still committing) unless
            // the gap is old (a rolled-back one): so they never skip an event.
            """
            CREATE TABLE spool_event_log (
                seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                count integer NOT NULL,
                at timestamptz NOT NULL,
                events text NOT NULL
            )
            """,
            "CREATE INDEX spool_event_log_at ON spool_event_log (at)",
            // The highest event-log seq pruning has deleted: gaps below it are not waited for.
            "CREATE TABLE spool_event_log_pruned (id integer PRIMARY KEY, through bigint NOT NULL)",
            """
            CREATE TABLE spool_webhook_deliveries (
                id uuid PRIMARY KEY, job_id uuid NOT NULL, tenant text NOT NULL, url text NOT NULL,
                event text NOT NULL, created_at timestamptz NOT NULL, attempts jsonb NOT NULL DEFAULT '[]'
            )
            """,
            "CREATE INDEX spool_webhook_deliveries_job ON spool_webhook_deliveries (job_id)",
            "CREATE INDEX spool_webhook_deliveries_created ON spool_webhook_deliveries (created_at)",
            "CREATE TABLE spool_webhook_secrets (tenant text PRIMARY KEY, secret text NOT NULL)",
            // Duties one process runs for the whole cluster; the holder renews before expires_at.
            "CREATE TABLE spool_leaders (duty text PRIMARY KEY, holder text NOT NULL, expires_at timestamptz NOT NULL)",
        ]),
        (2, "event log: settled gaps instead of a timeout", [
            // An event-log row's seq comes from a plain sequence, taken once the transaction has
            // an id.
            """
            DO $$
            DECLARE last bigint;
            BEGIN
                -- No writer of the old kind may take a seq while this runs.
                LOCK TABLE spool_event_log IN ACCESS EXCLUSIVE MODE;
                EXECUTE 'SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM '
                    || pg_get_serial_sequence('spool_event_log', 'seq') INTO last;
                last := greatest(last, (SELECT coalesce(max(seq), 0) FROM spool_event_log));
                ALTER TABLE spool_event_log ALTER COLUMN seq DROP IDENTITY;
                CREATE SEQUENCE spool_event_log_row_seq;
                IF last > 0 THEN PERFORM setval('spool_event_log_row_seq', last); END IF;
            END $$
            """,
            """
            CREATE FUNCTION spool_next_event_row() RETURNS bigint LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM pg_current_xact_id();
                RETURN nextval('spool_event_log_row_seq');
            END $$
            """,
            "ALTER TABLE spool_event_log ALTER COLUMN seq SET DEFAULT spool_next_event_row()",
            // Every row up to `through` is final: committed, or never will be (rolled back).
            // Readers step over gaps below it and wait at gaps above it.
            "CREATE TABLE spool_event_log_settled (id integer PRIMARY KEY, through bigint NOT NULL)",
            // Under the lock above, every seq taken so far is final.
            "INSERT INTO spool_event_log_settled (id, through) SELECT 1, coalesce(max(seq), 0) FROM spool_event_log",
        ]),
        (3, "worker registry", [
            // Every worker process and remote worker, refreshed while it lives; lost past
            // expires_at, dropped a while later. tenant: a remote worker's; NULL in-process.
            """
            CREATE TABLE spool_workers (
                id text PRIMARY KEY, tenant text, name text NOT NULL, host text, pid integer, version text,
                queues text[] NOT NULL, kinds text[] NOT NULL, concurrency integer NOT NULL, running integer NOT NULL,
                started_at timestamptz NOT NULL, last_seen_at timestamptz NOT NULL, expires_at timestamptz NOT NULL
            )
            """,
        ]),
        (4, "queue statistics", [
            // Figures per tenant, queue and minute, one row per process and flush (merged on
            // read). wait and run: histogram bucket counts.
            """
            CREATE TABLE spool_queue_minutes (
                tenant text NOT NULL, queue text NOT NULL, minute bigint NOT NULL, writer text NOT NULL, batch text NOT NULL,
                completed integer NOT NULL, failed integer NOT NULL, retried integer NOT NULL,
                wait bigint[] NOT NULL, run bigint[] NOT NULL
            )
            """,
            "CREATE INDEX spool_queue_minutes_minute ON spool_queue_minutes (minute)",
            // One flush of one writer is written once (a retried write after a timeout that committed).
            "CREATE UNIQUE INDEX spool_queue_minutes_batch ON spool_queue_minutes (writer, batch, tenant, queue, minute)",
            // Finding jobs by idempotency key across tenants, and by tag (operators, the dashboard).
            "CREATE INDEX spool_jobs_idempotency_key ON spool_jobs (idempotency_key) WHERE idempotency_key IS NOT NULL",
            "CREATE INDEX spool_jobs_tags ON spool_jobs USING gin (tags jsonb_path_ops)",
        ]),
        (5, "workflows", [
            // Job dependencies: a job waits (state 'waiting') until parents_left reaches 0.
            // has_children: only jobs some job depends on look for children when they finish,
            // so plain jobs pay nothing for workflows. cancelled_by: the parent whose failure
            // cancelled it (retrying that parent re-arms it). on_parent_failure: 'run', or NULL for 'cancel'
            // (plain jobs store nothing).
            """
            ALTER TABLE spool_jobs ADD COLUMN depends_on text, ADD COLUMN on_parent_failure text,
                ADD COLUMN parents_left integer NOT NULL DEFAULT 0, ADD COLUMN has_children boolean NOT NULL DEFAULT false,
                ADD COLUMN batch_id uuid, ADD COLUMN cancel_reason text, ADD COLUMN cancelled_by uuid
            """,
            "CREATE TABLE spool_job_dependencies (parent_id uuid NOT NULL, child_id uuid NOT NULL, PRIMARY KEY (parent_id, child_id))",
            "CREATE INDEX spool_job_dependencies_child ON spool_job_dependencies (child_id)",
            "CREATE INDEX spool_jobs_batch ON spool_jobs (batch_id, seq) WHERE batch_id IS NOT NULL",
            // done: jobs of the batch in a terminal state; it finishes when done reaches total
            // after it was closed (the row lock makes that happen once).
            """
            CREATE TABLE spool_batches (
                id uuid PRIMARY KEY, tenant text NOT NULL, state text NOT NULL, total integer NOT NULL DEFAULT 0,
                done integer NOT NULL DEFAULT 0, callback text, on_failure text, callback_url text, callback_job_id uuid,
                created_at timestamptz NOT NULL, closed_at timestamptz, finished_at timestamptz
            )
            """,
            "CREATE INDEX spool_batches_finished ON spool_batches (finished_at) WHERE finished_at IS NOT NULL",
            """
            CREATE TABLE spool_topic_subscriptions (
                tenant text NOT NULL, topic text NOT NULL, name text NOT NULL, queue text NOT NULL, kind text NOT NULL,
                filter text NOT NULL, created_at timestamptz NOT NULL, PRIMARY KEY (tenant, topic, name)
            )
            """,
            // Published events, kept for the event retention window (replays read them).
            """
            CREATE TABLE spool_topic_events (
                id uuid PRIMARY KEY, tenant text NOT NULL, topic text NOT NULL, payload text NOT NULL, attributes text NOT NULL,
                idempotency_key text, job_ids text NOT NULL, created_at timestamptz NOT NULL
            )
            """,
            "CREATE UNIQUE INDEX spool_topic_events_key ON spool_topic_events (tenant, topic, idempotency_key) WHERE idempotency_key IS NOT NULL",
            "CREATE INDEX spool_topic_events_topic ON spool_topic_events (tenant, topic, created_at)",
            "CREATE INDEX spool_topic_events_created ON spool_topic_events (created_at)",
            // Events published (subscriber '') and jobs made per subscriber, ever.
            """
            CREATE TABLE spool_topic_counts (
                tenant text NOT NULL, topic text NOT NULL, subscriber text NOT NULL, n bigint NOT NULL,
                last_at timestamptz NOT NULL, PRIMARY KEY (tenant, topic, subscriber)
            )
            """,
        ]),
    ]

    /// The oldest PostgreSQL the schema works on (`pg_current_xact_id`, `pg_snapshot`).
    static let minimumServerVersion = 130000

    static func migrate(_ client: PostgresClient, logger: Logger) async throws {
        try await client.withConnection { connection in
            for try await version in try await connection.query("SELECT current_setting('server_version_num')::int", logger: logger).decode(Int.self)
            where version < minimumServerVersion {
                throw SpoolError.invalid(field: "database", reason: "PostgreSQL \(version / 10000) is too old: Spool needs PostgreSQL 13 or later")
            }
            try await connection.query("BEGIN", logger: logger)
            do {
                try await connection.query("SELECT pg_advisory_xact_lock(\(migrationLock))", logger: logger).drain()
                try await connection.query("""
                    CREATE TABLE IF NOT EXISTS spool_migrations (
                        version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
                    """, logger: logger)
                var applied = Set<Int>()
                for try await version in try await connection.query("SELECT version FROM spool_migrations", logger: logger).decode(Int.self) {
                    applied.insert(version)
                }
                for migration in migrations where !applied.contains(migration.version) {
                    for statement in migration.sql {
                        try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                    }
                    try await connection.query(
                        "INSERT INTO spool_migrations (version, name) VALUES (\(migration.version), \(migration.name))", logger: logger)
                    logger.info("applied migration", metadata: ["version": "\(migration.version)", "name": "\(migration.name)"])
                }
                try await connection.query("COMMIT", logger: logger)
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: logger)
                throw error
            }
        }
    }
}

extension PostgresRowSequence {
    /// Reads every row, so that errors the server reports while streaming are thrown.
    func drain() async throws {
        for try await _ in self {}
    }
}
