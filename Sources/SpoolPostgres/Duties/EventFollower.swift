import Logging
import SpoolCore

/// Reads new event-log rows when the notifier rings (or every
/// ``PostgresJobStore/Options/eventPollInterval``) and hands their events to this process's
/// subscribers (SSE and WebSocket), in order, once each. Once a second it also settles what the
/// previous second's reading saw (see ``PostgresJobStore/eventRows(after:limit:)``). A process
/// without event subscribers (a worker) reads nothing; one that gains some starts from the
/// newest event.
struct EventFollower: Sendable {
    let store: PostgresJobStore

    func run() async {
        var following = false
        var position: Int64 = 0
        var lastSettle = ContinuousClock.now
        var reading: (writers: [String], newest: Int64)?
        while !Task.isCancelled {
            await store.eventBell.wait(timeout: store.options.eventPollInterval)
            if Task.isCancelled { return }
            guard store.signals.hasEventListeners else { following = false; continue }
            do {
                if ContinuousClock.now - lastSettle >= .seconds(1) {
                    lastSettle = ContinuousClock.now
                    if let reading { _ = try await store.settle(writers: reading.writers, through: reading.newest) }
                    reading = try await store.eventLogReading()
                }
                if !following {
                    position = try await store.lastEventSeq()
                    following = true
                }
                for _ in 0..<1000 {  // bounded; the next round carries on
                    let (rows, _) = try await store.eventRows(after: position, limit: 500)
                    for (row, events) in rows {
                        position = EventLogFormat.seq(row: row, index: EventLogFormat.perRow - 1)  // the whole row is read
                        if !events.isEmpty { store.signals.send(events: events) }
                    }
                    if rows.isEmpty { break }
                }
            } catch {
                if Task.isCancelled { return }
                store.logger.warning("could not read new events", metadata: ["error": "\(String(reflecting: error))"])
            }
        }
    }
}
