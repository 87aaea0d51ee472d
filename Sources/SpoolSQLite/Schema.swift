import GRDB

/// The versioned schema. Migrations are append-only: never edit one that has shipped.
enum Schema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: jobs, queues, queue_counts") { db in
            try db.execute(sql: """
                CREATE TABLE jobs (
                    seq INTEGER PRIMARY KEY,          -- insertion order: FIFO and cursors
                    id TEXT NOT NULL UNIQUE,          -- UUIDv7
                    tenant TEXT NOT NULL,
                    queue TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    payload TEXT NOT NULL,            -- JSON
                    priority INTEGER NOT NULL,
                    state TEXT NOT NULL,
                    attempt INTEGER NOT NULL,
                    max_attempts INTEGER NOT NULL,
                    run_at INTEGER NOT NULL,          -- microseconds since 1970
                    timeout_ms INTEGER NOT NULL,
                    progress_percent REAL,
                    progress_message TEXT,
                    result TEXT,                      -- JSON
                    errors TEXT NOT NULL DEFAULT '[]',-- JSON array of attempt errors
                    created_at INTEGER NOT NULL,
                    started_at INTEGER,
                    finished_at INTEGER,
                    idempotency_key TEXT,
                    callback_url TEXT,
                    tags TEXT NOT NULL DEFAULT '[]',
                    worker_id TEXT,
                    lease_token TEXT,
                    lease_expires_at INTEGER
                );
                -- Leasing reads only ready jobs: this index never holds finished ones, so the
                -- cost of a lease does not grow with the history kept in the table. (run_at makes
                -- it cover the "oldest pending job" statistic.)
                CREATE INDEX jobs_ready ON jobs(queue, priority DESC, seq, run_at) WHERE state = 'pending';
                CREATE INDEX jobs_scheduled ON jobs(queue, run_at) WHERE state = 'scheduled';
                CREATE INDEX jobs_leases ON jobs(lease_expires_at) WHERE state = 'processing';
                -- Listing a queue, and its dead letters. Neither changes when a job changes state,
                -- which keeps the cost of a state transition down.
                CREATE INDEX jobs_by_queue ON jobs(queue, seq);
                CREATE INDEX jobs_dead ON jobs(seq) WHERE state = 'failed';
                CREATE UNIQUE INDEX jobs_idempotency ON jobs(tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;

                CREATE TABLE queues (
                    name TEXT PRIMARY KEY,
                    paused INTEGER NOT NULL DEFAULT 0
                ) WITHOUT ROWID;

                -- Jobs per queue, tenant and state. The store updates them in the same transaction
                -- as the jobs (once per group commit, not per row), so depth checks and queue
                -- statistics cost O(1) however many jobs the table holds.
                CREATE TABLE queue_counts (
                    queue TEXT NOT NULL,
                    tenant TEXT NOT NULL,
                    state TEXT NOT NULL,
                    n INTEGER NOT NULL,
                    PRIMARY KEY (queue, tenant, state)
                ) WITHOUT ROWID;
                """)
        }
        migrator.registerMigration("v2: event_log") { db in
            try db.execute(sql: """
                -- Job events, one row per committed transaction (its events as a JSON array):
                -- one insert per group commit instead of one per event. An event's seq is
                -- (row seq << 16) | its index in the row. AUTOINCREMENT: a row seq is never
                -- reused after pruning, so clients can resume from the last seq they saw.
                CREATE TABLE event_log (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    count INTEGER NOT NULL,
                    at INTEGER NOT NULL,              -- microseconds since 1970
                    events TEXT NOT NULL              -- JSON array
                );
                CREATE INDEX event_log_at ON event_log(at);
                """)
        }
        migrator.registerMigration("v3: webhooks") { db in
            try db.execute(sql: """
                -- One row per webhook notification; id is its delivery job's id. Attempts are a
                -- JSON array appended by the delivery worker.
                CREATE TABLE webhook_deliveries (
                    id TEXT PRIMARY KEY,
                    job_id TEXT NOT NULL,
                    tenant TEXT NOT NULL,
                    url TEXT NOT NULL,
                    event TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    attempts TEXT NOT NULL DEFAULT '[]'
                ) WITHOUT ROWID;
                CREATE INDEX webhook_deliveries_job ON webhook_deliveries(job_id);
                CREATE INDEX webhook_deliveries_created ON webhook_deliveries(created_at);
                CREATE TABLE webhook_secrets (
                    tenant TEXT PRIMARY KEY,
                    secret TEXT NOT NULL
                ) WITHOUT ROWID;
                """)
        }
        migrator.registerMigration("v4: workers") { db in
            try db.execute(sql: """
                -- The worker registry: every worker process and remote worker, refreshed while it
                -- lives; lost past expires_at, dropped a while later.
                CREATE TABLE workers (
                    id TEXT PRIMARY KEY,
                    tenant TEXT,                      -- a remote worker's tenant; NULL: in-process
                    name TEXT NOT NULL,
                    host TEXT,
                    pid INTEGER,
                    version TEXT,
                    queues TEXT NOT NULL,             -- JSON array
                    kinds TEXT NOT NULL,              -- JSON array
                    concurrency INTEGER NOT NULL,
                    running INTEGER NOT NULL,
                    started_at INTEGER NOT NULL,      -- microseconds since 1970
                    last_seen_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL
                ) WITHOUT ROWID;
                """)
        }
        migrator.registerMigration("v5: queue statistics") { db in
            try db.execute(sql: """
                -- Figures per tenant, queue and minute, one row per process and flush (merged
                -- on read). wait and run: histogram bucket counts (JSON arrays).
                CREATE TABLE queue_minutes (
                    tenant TEXT NOT NULL,
                    queue TEXT NOT NULL,
                    minute INTEGER NOT NULL,          -- minutes since 1970
                    writer TEXT NOT NULL,
                    batch TEXT NOT NULL,              -- one flush of one writer: written once
                    completed INTEGER NOT NULL,
                    failed INTEGER NOT NULL,
                    retried INTEGER NOT NULL,
                    wait TEXT NOT NULL,
                    run TEXT NOT NULL
                );
                CREATE INDEX queue_minutes_minute ON queue_minutes(minute);
                CREATE UNIQUE INDEX queue_minutes_batch ON queue_minutes(writer, batch, tenant, queue, minute);
                -- Finding a job by its idempotency key across tenants (operators, the dashboard).
                CREATE INDEX jobs_idempotency_key ON jobs(idempotency_key) WHERE idempotency_key IS NOT NULL;
                """)
        }
        migrator.registerMigration("v6: workflows") { db in
            try db.execute(sql: """
                -- Job dependencies: a job waits (state 'waiting') until parents_left reaches 0.
                ALTER TABLE jobs ADD COLUMN depends_on TEXT;              -- JSON array of parent ids
                ALTER TABLE jobs ADD COLUMN on_parent_failure TEXT;        -- 'run'; NULL: 'cancel' (nothing stored for plain jobs)
                ALTER TABLE jobs ADD COLUMN parents_left INTEGER NOT NULL DEFAULT 0;
                -- Set on a job some other job depends on: only such jobs look for children when
                -- they finish, so plain jobs pay nothing for workflows.
                ALTER TABLE jobs ADD COLUMN has_children INTEGER NOT NULL DEFAULT 0;
                ALTER TABLE jobs ADD COLUMN batch_id TEXT;
                ALTER TABLE jobs ADD COLUMN cancel_reason TEXT;
                ALTER TABLE jobs ADD COLUMN cancelled_by TEXT;            -- the parent whose failure cancelled it
                CREATE TABLE job_dependencies (
                    parent_id TEXT NOT NULL,
                    child_id TEXT NOT NULL,
                    PRIMARY KEY (parent_id, child_id)
                ) WITHOUT ROWID;
                CREATE INDEX job_dependencies_child ON job_dependencies(child_id);
                CREATE INDEX jobs_batch ON jobs(batch_id, seq) WHERE batch_id IS NOT NULL;
                -- done: jobs of the batch in a terminal state; the batch finishes when it reaches
                -- total after it was closed.
                CREATE TABLE batches (
                    id TEXT PRIMARY KEY,
                    tenant TEXT NOT NULL,
                    state TEXT NOT NULL,
                    total INTEGER NOT NULL DEFAULT 0,
                    done INTEGER NOT NULL DEFAULT 0,
                    callback TEXT,                    -- JSON
                    on_failure TEXT,                  -- JSON
                    callback_url TEXT,
                    callback_job_id TEXT,
                    created_at INTEGER NOT NULL,
                    closed_at INTEGER,
                    finished_at INTEGER
                ) WITHOUT ROWID;
                CREATE INDEX batches_finished ON batches(finished_at) WHERE finished_at IS NOT NULL;
                CREATE TABLE topic_subscriptions (
                    tenant TEXT NOT NULL,
                    topic TEXT NOT NULL,
                    name TEXT NOT NULL,
                    queue TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    filter TEXT NOT NULL,             -- JSON object: attribute -> accepted values
                    created_at INTEGER NOT NULL,
                    PRIMARY KEY (tenant, topic, name)
                ) WITHOUT ROWID;
                -- Published events, kept for the event retention window (replays read them).
                CREATE TABLE topic_events (
                    id TEXT PRIMARY KEY,
                    tenant TEXT NOT NULL,
                    topic TEXT NOT NULL,
                    payload TEXT NOT NULL,
                    attributes TEXT NOT NULL,
                    idempotency_key TEXT,
                    job_ids TEXT NOT NULL,            -- JSON array
                    created_at INTEGER NOT NULL
                ) WITHOUT ROWID;
                CREATE UNIQUE INDEX topic_events_key ON topic_events(tenant, topic, idempotency_key) WHERE idempotency_key IS NOT NULL;
                CREATE INDEX topic_events_topic ON topic_events(tenant, topic, created_at);
                CREATE INDEX topic_events_created ON topic_events(created_at);
                -- Events published (subscriber '') and jobs made per subscriber, ever.
                CREATE TABLE topic_counts (
                    tenant TEXT NOT NULL,
                    topic TEXT NOT NULL,
                    subscriber TEXT NOT NULL,
                    n INTEGER NOT NULL,
                    last_at INTEGER NOT NULL,
                    PRIMARY KEY (tenant, topic, subscriber)
                ) WITHOUT ROWID;
                """)
        }
        return migrator
    }
}
