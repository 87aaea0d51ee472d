import Logging
import SpoolCore

/// Once a second, moves the count changes transactions appended to `spool_count_deltas` into
/// the per-queue totals (transactions never update a shared counter row, so they never wait
/// for each other). Any process may fold; each change is taken once.
struct CountFolder: Sendable {
    let store: PostgresJobStore
    var interval: Duration = .seconds(1)

    func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: interval)
            if Task.isCancelled { return }
            do {
                try await store.foldCounts()
            } catch {
                if Task.isCancelled { return }
                store.logger.warning("could not fold queue counts", metadata: ["error": "\(String(reflecting: error))"])
            }
        }
    }
}
