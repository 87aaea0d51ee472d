import Logging
import PostgresNIO
import SpoolCore

/// Keeps one connection `LISTEN`ing on the `spool` channel and turns what other processes
/// `NOTIFY` into this process's store signals: work arrived (`w:<queue>`), a queue resumed
/// (`r:<queue>`), a job was cancelled (`c:<id>`), new events (`e`, which rings the event
/// follower). Reconnects with backoff; after a reconnect the follower catches up from the log.
struct Notifier: Sendable {
    let store: PostgresJobStore

    func run() async {
        var failures = 0
        while !Task.isCancelled {
            do {
                try await store.client.withConnection { connection in
                    try await connection.listen(on: PostgresJobStore.channel) { notifications in
                        failures = 0
                        store.eventBell.ring()  // catch up on what was missed while away
                        for try await notification in notifications { handle(notification.payload) }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                failures += 1
                store.logger.warning("lost the LISTEN connection; reconnecting", metadata: ["error": "\(String(reflecting: error))"])
            }
            try? await Task.sleep(for: .milliseconds(min(5000, 100 * (1 << min(failures, 6)))))
        }
    }

    func handle(_ payload: String) {
        if payload == "e" { store.eventBell.ring(); return }
        let value = String(payload.dropFirst(2))
        switch payload.prefix(2) {
        case "w:": store.signals.send(.workAvailable(queue: value))
        case "r:": store.signals.send(.queueResumed(queue: value))
        case "c:": if let id = JobID(value) { store.signals.send(.jobCancelled(id)) }
        default: break
        }
    }
}
