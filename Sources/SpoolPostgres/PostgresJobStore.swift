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
    let runner: Task<Void, Never>
    let background = Mutex<[Task<Void, Never>]>([])
    /// Rung by a notification of new events (the notifier rings, the event follower waits).
    let eventBell = Doorbell()
    let closed = Atomic<Bool>(false)
    let enqueues = WriteBatcher<(Job, Int?), EnqueueResult>(overlap: .afterFinish)
    let completions = WriteBatcher<(JobID, LeaseToken, String?), Void>(overlap: .afterFinish)

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
        enqueues.write = { [unowned self] take in try await self.insertMany(take()) }
        completions.write = { [unowned self] take in try await self.completeMany(take()) }
    }

    /// `url` with its password hidden, for logs.
    public static func redacted(_ url: String) -> String { PostgresURL.redacted(url) }

    /// Whether `database` names a PostgreSQL database rather than a SQLite file.
    public static func isPostgresURL(_ database: String) -> Bool { PostgresURL.isPostgres(database) }

    public func migrate() async throws {
        try await withDeadline { try await PostgresSchema.migrate(self.client, logger: self.logger) }
    }

    /// Starts this process's background duties, once: the ``Notifier`` (wake-ups and cancels
    /// from every process), the ``EventFollower`` (events of every process for local streams)
    /// and the ``CountFolder``. Workers and gateways start them; a one-off command (enqueue from
    /// the CLI) needs none.
    public func startBackgroundDuties() {
        background.withLock { tasks in
            guard tasks.isEmpty else { return }
            tasks.append(Task { await Notifier(store: self).run() })
            tasks.append(Task { await EventFollower(store: self).run() })
            tasks.append(Task { await CountFolder(store: self).run() })
        }
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
        try await autocommit { client in try await client.query(PostgresQuery(unsafeSQL: sql), logger: self.logger).drain() }
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
    func writeBookkeeping(_ connection: PostgresConnection, _ changes: ChangeSet) async throws {
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
    func autocommit<T: Sendable>(_ body: @escaping @Sendable (PostgresClient) async throws -> T) async throws -> T {
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
