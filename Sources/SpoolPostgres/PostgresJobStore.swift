import Foundation
import Logging
import PostgresNIO
import SpoolCore
import Synchronization

/// The shared store: any number of gateway and worker processes, on any machines, pointed at
/// one PostgreSQL database behave as one system.
///
/// - Leasing takes a batch in one statement with `FOR UPDATE SKIP LOCKED`, so workers never
///   wait for each other; single enqueues and completions arriving together share a
///   transaction ("group commit", as in the SQLite store).
/// - Every transaction ends with its bookkeeping in one statement: its per-queue count changes
///   (appended, folded into totals every second, so transactions share no row and never wait
///   for each other), one `spool_event_log` row, and a `NOTIFY` on the `spool` channel telling
///   every process: work arrived, a job was cancelled, new events. Event-log readers wait at a
///   gap in the seqs (a transaction still committing), so events are read in order, none skipped.
/// - Each process keeps one connection `LISTEN`ing; it wakes local workers, stops cancelled
///   jobs and feeds the events of every process to local SSE and WebSocket clients. A fallback
///   poll covers notifications lost while that connection was down.
/// - A call that cannot reach the database within ``Options/operationTimeout`` throws
///   ``SpoolError/unavailable(reason:)`` (the gateway answers 503); the pool reconnects by itself.
///
/// Call ``migrate()`` before use (every process may; it is safe concurrently) and ``close()``
/// at the end.
public final class PostgresJobStore: JobStore {
    /// Settings of the store.
    public struct Options: Sendable {
        /// Connections in this process's pool (one more is held for `LISTEN`).
        public var maxConnections = 20
        /// The longest a call waits for the database before it fails as unavailable.
        public var operationTimeout: Duration = .seconds(10)
        /// How often events are looked for without a notification (a missed one is found then).
        public var eventPollInterval: Duration = .seconds(1)
        public init() {}
    }

    public let signals = StoreSignals()
    let client: PostgresClient
    let logger: Logger
    let options: Options
    private let runner: Task<Void, Never>
    private let background = Mutex<[Task<Void, Never>]>([])
    /// Rung by a notification of new events.
    private let eventBell = Doorbell()
    private let lastSeenEvent = Atomic<Int64>(0)
    private let closed = Atomic<Bool>(false)
    let enqueues: Batcher<(Job, Int?), EnqueueResult>
    let completions: Batcher<(JobID, LeaseToken, String?), Void>

    /// Arbitrary but fixed advisory lock keys.
    static let depthLockClass: Int32 = 0x5350_4450  // "SPDP": with hashtext(queue), enqueues to a depth-limited queue
    static let channel = "spool"

    /// Connects to `url` (`postgres://user:password@host:port/database`).
    public init(url: String, options: Options = Options(), logger: Logger = Logger(label: "spool.postgres")) throws {
        var configuration = try PostgresURL.configuration(url, maxConnections: options.maxConnections + 1)
        // The server gives up on what the client gave up on (a statement past the deadline, a
        // transaction left open), so an abandoned call cannot hold rows or commit much later.
        let ms = max(1000, Int(options.operationTimeout.seconds * 1000) - 500)
        configuration.options.additionalStartupParameters += [
            ("statement_timeout", String(ms)), ("idle_in_transaction_session_timeout", String(ms)),
        ]
        self.options = options
        self.logger = logger
        var backgroundLogger = logger
        backgroundLogger[metadataKey: "database"] = "\(PostgresURL.redacted(url))"
        let client = PostgresClient(configuration: configuration, backgroundLogger: backgroundLogger)
        self.client = client
        runner = Task { await client.run() }
        enqueues = Batcher()
        completions = Batcher()
        enqueues.body = { [unowned self] items in try await self.insertMany(items) }
        completions.body = { [unowned self] items in try await self.completeMany(items) }
    }

    /// `url` with its password hidden, for logs.
    public static func redacted(_ url: String) -> String { PostgresURL.redacted(url) }

    /// Whether `database` names a PostgreSQL database rather than a SQLite file.
    public static func isPostgresURL(_ database: String) -> Bool { PostgresURL.isPostgres(database) }

    public func migrate() async throws {
        try await withDeadline { try await PostgresSchema.migrate(self.client, logger: self.logger) }
        startListening()
    }

    public func close() async throws {
        guard !closed.exchange(true, ordering: .relaxed) else { return }
        for task in background.withLock({ $0 }) { task.cancel() }
        eventBell.ring()
        for task in background.withLock({ $0 }) { await task.value }
        runner.cancel()
        await runner.value
    }

    /// Runs one statement outside a transaction (administration: `CREATE DATABASE`, tests).
    public func execute(_ sql: String) async throws {
        try await read { client in try await client.query(PostgresQuery(unsafeSQL: sql), logger: self.logger).drain() }
    }

    // MARK: Transactions

    /// Runs `body` in a transaction on one connection, then writes its bookkeeping (counts,
    /// events, notifications) and commits. A deadlock or serialization failure retries it from
    /// the start; a lost connection throws ``SpoolError/unavailable(reason:)``.
    func transaction<T: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection, ChangeSet) async throws -> T
    ) async throws -> T {
        if closed.load(ordering: .relaxed) { throw SpoolError.unavailable(reason: "the store is closed") }
        var attempt = 0
        while true {
            attempt += 1
            // The connection in use, so that a deadline can close it: an abandoned transaction
            // must neither hold its locks nor commit after its caller was told it failed.
            let state = Mutex(TransactionState())
            do {
                let (result, signals) = try await withDeadline(onTimeout: {
                    let connection = state.withLock { s -> PostgresConnection? in
                        s.timedOut = true
                        return s.commitSent ? nil : s.connection
                    }
                    if let connection { let closing: EventLoopFuture<Void> = connection.close(); _ = closing }
                }, timeoutReason: { timeout in
                    state.withLock { $0.commitSent }
                        ? "PostgreSQL did not confirm the COMMIT within \(timeout): the outcome is unknown (the change may have been committed)"
                        : "PostgreSQL did not answer within \(timeout); the transaction was rolled back"
                }) { () async throws -> (T, Set<StoreSignals.Signal>) in
                    try await self.client.withConnection { connection in
                        if state.withLock({ s in s.connection = connection; return s.timedOut }) { throw CancellationError() }
                        try await connection.query("BEGIN", logger: self.logger)
                        do {
                            let changes = ChangeSet()
                            let result = try await body(connection, changes)
                            try await self.writeBookkeeping(connection, changes)
                            // Past the deadline nothing commits; before it, the deadline no
                            // longer closes the connection under a COMMIT in flight.
                            if state.withLock({ s in s.commitSent = !s.timedOut; return s.timedOut }) { throw CancellationError() }
                            try await connection.query("COMMIT", logger: self.logger)
                            return (result, changes.signals)
                        } catch {
                            // A connection whose transaction state is unknown is closed, never
                            // handed back to the pool (the next user would run inside it).
                            do { try await connection.query("ROLLBACK", logger: self.logger) } catch { _ = try? await connection.close() }
                            if state.withLock({ $0.commitSent }), Self.isConnectionLoss(error) {
                                throw SpoolError.unavailable(reason: "lost the connection to PostgreSQL after COMMIT was sent: the outcome is unknown (the change may have been committed)")
                            }
                            throw error
                        }
                    }
                }
                // Local workers hear at once; other processes through NOTIFY.
                for signal in signals { self.signals.send(signal) }
                return result
            } catch {
                let mapped = Self.map(error)
                if attempt < 4, Self.isRetryable(error) {
                    try await Task.sleep(for: .milliseconds(attempt * attempt * 5))
                    continue
                }
                throw mapped
            }
        }
    }

    /// The end of every transaction, in one statement: count changes, the event-log row (as
    /// late as possible, so that the gap its seq leaves until the commit is short), notifications.
    private func writeBookkeeping(_ connection: PostgresConnection, _ changes: ChangeSet) async throws {
        let counts = changes.nonZeroCounts
        var notes: Set<String> = []
        for signal in changes.signals {
            switch signal {
            case .workAvailable(let queue): notes.insert("w:" + queue)
            case .queueResumed(let queue): notes.insert("r:" + queue)
            case .jobCancelled(let id): notes.insert("c:" + id.description)
            }
        }
        if !changes.events.isEmpty { notes.insert("e") }
        if counts.isEmpty && changes.events.isEmpty && notes.isEmpty { return }
        let queues = counts.map(\.0.queue), tenants = counts.map(\.0.tenant)
        let states = counts.map(\.0.state.rawValue), ns = counts.map { Int64($0.1) }
        let firstRow = min(changes.events.count, EventLogFormat.perRow)
        let text = firstRow > 0 ? EventLogFormat.encode(changes.events[0..<firstRow]) : ""
        let payloads = Array(notes)
        var row: Int64 = 0
        for try await seq in try await connection.query("""
            WITH counts AS (
                INSERT INTO spool_count_deltas (queue, tenant, state, n)
                SELECT * FROM unnest(\(queues)::text[], \(tenants)::text[], \(states)::text[], \(ns)::int8[])
                RETURNING 1),
            log AS (
                INSERT INTO spool_event_log (count, at, events)
                SELECT \(Int64(firstRow)), clock_timestamp(), \(text) WHERE \(Int64(firstRow)) > 0
                RETURNING seq),
            notes AS (SELECT pg_notify(\(Self.channel), p) FROM unnest(\(payloads)::text[]) AS p)
            SELECT coalesce((SELECT seq FROM log), 0) + 0 * (SELECT count(*) FROM notes) + 0 * (SELECT count(*) FROM counts)
            """, logger: logger).decode(Int64.self) { row = seq }
        for n in 0..<firstRow { changes.events[n].seq = EventLogFormat.seq(row: row, index: n) }
        // More than one row's worth of events (a batch of over 65,536 changes): the rest follow.
        var index = firstRow
        while index < changes.events.count {
            let end = min(index + EventLogFormat.perRow, changes.events.count)
            let more = EventLogFormat.encode(changes.events[index..<end])
            for try await seq in try await connection.query(
                "INSERT INTO spool_event_log (count, at, events) VALUES (\(Int64(end - index)), clock_timestamp(), \(more)) RETURNING seq", logger: logger
            ).decode(Int64.self) { row = seq }
            for n in index..<end { changes.events[n].seq = EventLogFormat.seq(row: row, index: n - index) }
            index = end
        }
    }

    /// A statement outside a transaction (a read, or a write in one statement), with the same
    /// deadline, error mapping and retry of deadlocks as ``transaction(_:)``: a statement that
    /// failed changed nothing, so running it again is safe.
    func read<T: Sendable>(_ body: @escaping @Sendable (PostgresClient) async throws -> T) async throws -> T {
        if closed.load(ordering: .relaxed) { throw SpoolError.unavailable(reason: "the store is closed") }
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await withDeadline { try await body(self.client) }
            } catch {
                if attempt < 4, Self.isRetryable(error) {
                    try await Task.sleep(for: .milliseconds(attempt * attempt * 5))
                    continue
                }
                throw Self.map(error)
            }
        }
    }

    /// Fails with ``SpoolError/unavailable(reason:)`` when `operation` takes longer than
    /// ``Options/operationTimeout`` (the pool queues requests while the database is down).
    ///
    /// The caller is answered at the deadline even if the operation does not stop when
    /// cancelled (a task group would wait for it): a stuck connection cannot hang the engine.
    func withDeadline<T: Sendable>(
        onTimeout: @escaping @Sendable () -> Void = {},
        timeoutReason: @escaping @Sendable (Duration) -> String = { "PostgreSQL did not answer within \($0)" },
        _ operation: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let timeout = options.operationTimeout
        let race = DeadlineRace()
        return try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let work = Task {
                let result: Result<T, any Error>
                do { result = .success(try await operation()) } catch { result = .failure(error) }
                if !race.answered.exchange(true, ordering: .acquiringAndReleasing) {
                    race.timer.withLock { $0?.cancel() }
                    continuation.resume(with: result)
                }
            }
            let sleeper = Task {
                try? await Task.sleep(for: timeout)
                if !race.answered.exchange(true, ordering: .acquiringAndReleasing) {
                    work.cancel()
                    onTimeout()
                    continuation.resume(throwing: SpoolError.unavailable(reason: timeoutReason(timeout)))
                }
            }
            race.timer.withLock { $0 = sleeper }
            if race.answered.load(ordering: .acquiring) { sleeper.cancel() }
        }
    }

    // MARK: Errors

    static func sqlState(_ error: any Error) -> String? {
        (error as? PSQLError)?.serverInfo?[.sqlState] ?? (error as? PostgresStoreError)?.sqlState
    }

    /// Whether `error` means the connection went away (so a statement's outcome is unknown).
    static func isConnectionLoss(_ error: any Error) -> Bool {
        guard let e = error as? PSQLError else { return false }
        switch e.code {
        case .connectionError, .serverClosedConnection, .clientClosedConnection, .uncleanShutdown: return true
        default: return false
        }
    }

    static func isRetryable(_ error: any Error) -> Bool {
        ["40001", "40P01"].contains(sqlState(error) ?? "")
    }

    /// Connection trouble becomes ``SpoolError/unavailable(reason:)``; other errors pass.
    static func map(_ error: any Error) -> any Error {
        if error is SpoolError || error is CancellationError { return error }
        if let e = error as? PSQLError {
            switch e.code {
            case .connectionError, .serverClosedConnection, .clientClosedConnection, .poolClosed, .uncleanShutdown, .queryCancelled:
                return SpoolError.unavailable(reason: "lost the connection to PostgreSQL")
            case .server:
                let state = e.serverInfo?[.sqlState] ?? ""
                if state.hasPrefix("08") || ["57P01", "57P02", "57P03", "53300", "53100", "53200", "57014", "25006", "40001", "40P01"].contains(state) {
                    return SpoolError.unavailable(reason: "PostgreSQL is unavailable (\(state): \(e.serverInfo?[.message] ?? ""))")
                }
                return PostgresStoreError(e)
            default:
                return PostgresStoreError(e)
            }
        }
        if String(reflecting: type(of: error)).hasSuffix("ConnectionPoolError") {
            return SpoolError.unavailable(reason: "cannot connect to PostgreSQL")
        }
        return error
    }

    // MARK: Notifications and events from every process

    /// Starts the listener and the event follower, once (`migrate()` may be called again).
    private func startListening() {
        background.withLock { tasks in
            guard tasks.isEmpty else { return }
            tasks.append(Task { await self.listenLoop() })
            tasks.append(Task { await self.followEvents() })
        }
    }

    /// Keeps one connection listening on the channel, reconnecting with backoff.
    private func listenLoop() async {
        var failures = 0
        while !Task.isCancelled {
            do {
                try await client.withConnection { connection in
                    try await connection.listen(on: Self.channel) { notifications in
                        failures = 0
                        self.eventBell.ring()  // catch up on what was missed while away
                        for try await notification in notifications { self.handle(notification.payload) }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                failures += 1
                logger.warning("lost the LISTEN connection; reconnecting", metadata: ["error": "\(String(reflecting: error))"])
            }
            try? await Task.sleep(for: .milliseconds(min(5000, 100 * (1 << min(failures, 6)))))
        }
    }

    private func handle(_ payload: String) {
        if payload == "e" { eventBell.ring(); return }
        let value = String(payload.dropFirst(2))
        switch payload.prefix(2) {
        case "w:": signals.send(.workAvailable(queue: value))
        case "r:": signals.send(.queueResumed(queue: value))
        case "c:": if let id = JobID(value) { signals.send(.jobCancelled(id)) }
        default: break
        }
    }

    /// Reads new event-log rows when told (or every poll interval) and hands their events to
    /// local subscribers, in order, once each.
    private func followEvents() async {
        let poll = options.eventPollInterval
        var following = false
        var lastFold = ContinuousClock.now
        var lastSettle = ContinuousClock.now
        var reading: (snapshot: String, newest: Int64)?
        while !Task.isCancelled {
            // Wait for a notification or the poll interval, whichever comes first.
            await eventBell.wait(timeout: poll)
            if Task.isCancelled { return }
            do {
                // Once a second, not on every notification: under load those come hundreds of
                // times a second, and each fold is a write.
                if ContinuousClock.now - lastFold >= .seconds(1) {
                    lastFold = ContinuousClock.now
                    try await foldCounts()
                }
                // A process without event subscribers (a worker) reads no events; one that gains
                // some starts from the newest event.
                guard signals.hasEventListeners else { following = false; continue }
                // Once a second, settle what the previous second's reading saw, so that gaps
                // (rolled-back transactions) are stepped over and `lastEventSeq` looks at few rows.
                if ContinuousClock.now - lastSettle >= .seconds(1) {
                    lastSettle = ContinuousClock.now
                    if let reading { _ = try await settle(reading.snapshot, through: reading.newest) }
                    reading = try await eventLogReading()
                }
                if !following {
                    lastSeenEvent.store(try await lastEventSeq(), ordering: .relaxed)
                    following = true
                }
                for _ in 0..<1000 {  // bounded; the next poll carries on
                    let after = lastSeenEvent.load(ordering: .relaxed)
                    let (rows, _) = try await eventRows(after: after, limit: 500)
                    for (row, events) in rows {
                        lastSeenEvent.store(EventLogFormat.seq(row: row, index: EventLogFormat.perRow - 1), ordering: .relaxed)  // the whole row is read
                        if !events.isEmpty { signals.send(events: events) }
                    }
                    if rows.isEmpty { break }
                }
            } catch {
                if Task.isCancelled { return }
                logger.warning("could not read new events", metadata: ["error": "\(String(reflecting: error))"])
            }
        }
    }
}

extension PostgresJobStore {
    /// Event-log rows after the one holding `after`, in seq order, stopping at a gap that may
    /// still fill: a transaction that has its seq but has not committed yet.
    ///
    /// A gap is stepped over only below the settled mark, and the mark moves only by this rule:
    /// a read sees rows up to `M` with snapshot `S`. A transaction holding a seq below `M` took
    /// it before `S` and had its transaction id by then (``PostgresSchema`` makes sure), so unless
    /// it had ended by `S` it is listed in `S`; and it holds a lock on the event log from its
    /// insert until after it has ended for every later snapshot. Once no transaction listed in
    /// `S` holds that lock, every seq up to `M` is final: committed (and seen by any later read)
    /// or rolled back. So no committed event is ever skipped, however slow its commit, and
    /// transactions that never touch the event log (other applications) hold nothing up.
    ///
    /// `atEnd` is true when the read stopped at the log's end or at a gap, not at `limit`.
    func eventRows(after: Int64, limit: Int) async throws -> (rows: [(Int64, [JobEvent])], atEnd: Bool) {
        let afterRow = EventLogFormat.row(of: after)
        var result: [(Int64, [JobEvent])] = []
        var atEnd = true
        for round in 0..<2 {
            let read = try await readEventRows(fromRow: afterRow, limit: limit)
            result = []
            // Rows up to the pruned mark are gone for good: no gap to wait for there.
            var expected = max(afterRow, read.prunedThrough)
            var blocked = false
            for (seq, text) in read.rows {
                if seq > expected + 1 && seq - 1 > read.settled { blocked = true; break }  // a gap that may still fill
                expected = seq
                let events = EventLogFormat.decode(row: seq, text: text).filter { $0.seq > after }
                if seq > afterRow || !events.isEmpty { result.append((seq, events)) }
            }
            atEnd = blocked || read.rows.count < limit
            guard blocked, round == 0, try await settle(read.snapshot, through: read.newest) else { break }
            // Settled: read again; the gap is now either filled or final.
        }
        return (result, atEnd)
    }

    /// One read of the event log with what its gap rule needs, all from one snapshot.
    struct EventLogRead {
        var rows: [(Int64, String)] = []
        var prunedThrough: Int64 = 0
        var settled: Int64 = 0
        var snapshot = ""
        var newest: Int64 = 0
    }

    private func readEventRows(fromRow: Int64, limit: Int) async throws -> EventLogRead {
        let logger = self.logger
        return try await read { client in
            var read = EventLogRead()
            for try await row in try await client.query("""
                SELECT seq, events,
                       (SELECT coalesce(max(through), 0) FROM spool_event_log_pruned),
                       (SELECT coalesce(max(through), 0) FROM spool_event_log_settled),
                       pg_current_snapshot()::text,
                       (SELECT coalesce(max(seq), 0) FROM spool_event_log)
                FROM spool_event_log WHERE seq >= \(fromRow) ORDER BY seq LIMIT \(Int64(limit))
                """, logger: logger).decode((Int64, String, Int64, Int64, String, Int64).self) {
                read.rows.append((row.0, row.1))
                (read.prunedThrough, read.settled, read.snapshot, read.newest) = (row.2, row.3, row.4, row.5)
            }
            return read
        }
    }

    /// The newest event-log row and the snapshot it was read in, for a later ``settle(_:through:)``.
    func eventLogReading() async throws -> (snapshot: String, newest: Int64) {
        let logger = self.logger
        return try await read { client in
            var reading = ("", Int64(0))
            for try await row in try await client.query(
                "SELECT pg_current_snapshot()::text, (SELECT coalesce(max(seq), 0) FROM spool_event_log)", logger: logger
            ).decode((String, Int64).self) { reading = row }
            return reading
        }
    }

    /// Moves the settled mark to `through` if every transaction running at `snapshot` has
    /// ended. Returns whether it did.
    func settle(_ snapshot: String, through: Int64) async throws -> Bool {
        guard !snapshot.isEmpty else { return false }
        let logger = self.logger
        return try await read { client in
            var settled = false
            // Transactions of `snapshot` that hold a lock on the event log now (each holds a lock
            // on its own 32-bit transaction id too, which is how the two are matched).
            for try await _ in try await client.query("""
                WITH listed AS (SELECT (x::text::numeric % 4294967296)::int8 AS xid FROM pg_snapshot_xip(\(snapshot)::pg_snapshot) AS x),
                writing AS (
                    SELECT 1 FROM pg_locks r JOIN pg_locks t ON t.pid = r.pid AND t.locktype = 'transactionid'
                    WHERE r.locktype = 'relation' AND r.relation = 'spool_event_log'::regclass
                      AND r.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                      AND t.transactionid::text::int8 IN (SELECT xid FROM listed))
                INSERT INTO spool_event_log_settled (id, through)
                SELECT 1, \(through) WHERE NOT EXISTS (SELECT 1 FROM writing)
                ON CONFLICT (id) DO UPDATE SET through = excluded.through
                WHERE spool_event_log_settled.through < excluded.through
                RETURNING through
                """, logger: logger).decode(Int64.self) { settled = true }
            return settled
        }
    }

    /// Moves the appended count changes into the totals (any process may; each change is
    /// taken once).
    func foldCounts() async throws {
        let logger = self.logger
        try await read { client in
            try await client.query("""
                WITH d AS (
                    DELETE FROM spool_count_deltas WHERE id IN (
                        SELECT id FROM spool_count_deltas ORDER BY id LIMIT 20000 FOR UPDATE SKIP LOCKED)
                    RETURNING queue, tenant, state, n)
                INSERT INTO spool_queue_counts (queue, tenant, state, n)
                SELECT queue, tenant, state, sum(n) FROM d GROUP BY queue, tenant, state ORDER BY queue, tenant, state
                ON CONFLICT (queue, tenant, state) DO UPDATE SET n = spool_queue_counts.n + excluded.n
                """, logger: logger)
        }
    }
}

/// A PostgreSQL error other than a lost connection, with the server's message (postgres-nio
/// hides it from `description`).
public struct PostgresStoreError: Error, CustomStringConvertible {
    public var description: String
    /// The SQLSTATE, when the server reported the error.
    public var sqlState: String?
    init(_ error: PSQLError) {
        description = String(reflecting: error)
        sqlState = error.serverInfo?[.sqlState]
    }
}

/// What the deadline of a transaction needs to know about it.
struct TransactionState: Sendable {
    var connection: PostgresConnection?
    var timedOut = false
    var commitSent = false
}

/// Who answers a ``PostgresJobStore/withDeadline(_:)`` caller first: the work or the timer.
private final class DeadlineRace: Sendable {
    let answered = Atomic<Bool>(false)
    let timer = Mutex<Task<Void, Never>?>(nil)
}

/// Merges single calls that arrive together into one transaction: the first caller of a group
/// starts a flush; whatever arrives while a flush runs goes in the next one.
final class Batcher<Item: Sendable, Output: Sendable>: @unchecked Sendable {
    typealias Body = @Sendable ([Item]) async throws -> [Result<Output, SpoolError>]
    private struct Waiting: Sendable {
        var item: Item
        var continuation: CheckedContinuation<Output, any Error>
    }
    private struct State {
        var waiting: [Waiting] = []
        var flushing = false
    }
    private let state = Mutex(State())
    /// Set once, right after init.
    var body: Body = { _ in [] }
    let maxBatch = 1000

    func submit(_ item: Item) async throws -> Output {
        try await withCheckedThrowingContinuation { continuation in
            let start = state.withLock { s -> Bool in
                s.waiting.append(Waiting(item: item, continuation: continuation))
                if s.flushing { return false }
                s.flushing = true
                return true
            }
            if start { Task { await self.flush() } }
        }
    }

    private static func isUnavailable(_ error: any Error) -> Bool {
        if case SpoolError.unavailable = error { return true }
        return error is CancellationError
    }

    private func flush() async {
        while true {
            let taken = state.withLock { s -> [Waiting] in
                let n = min(s.waiting.count, maxBatch)
                let taken = Array(s.waiting.prefix(n))
                s.waiting.removeFirst(n)
                if taken.isEmpty { s.flushing = false }
                return taken
            }
            if taken.isEmpty { return }
            do {
                let results = try await body(taken.map(\.item))
                precondition(results.count == taken.count, "a batched write must answer every item")
                for (waiting, result) in zip(taken, results) { waiting.continuation.resume(with: result.mapError { $0 as any Error }) }
            } catch {
                if taken.count > 1, !Self.isUnavailable(error) {
                    // One bad item (a value the server refuses) must not fail the others: each
                    // goes again on its own, and only the bad one fails.
                    for waiting in taken {
                        do {
                            let result = try await body([waiting.item])
                            waiting.continuation.resume(with: result[0].mapError { $0 as any Error })
                        } catch {
                            waiting.continuation.resume(throwing: error)
                        }
                    }
                } else {
                    for waiting in taken { waiting.continuation.resume(throwing: error) }
                }
            }
        }
    }
}
