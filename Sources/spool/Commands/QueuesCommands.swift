import ArgumentParser
import Foundation
import SpoolCore

struct Queues: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show every queue with its counts per state.")
    @OptionGroup var store: StoreOptions
    @Flag(help: "Print JSON instead of a table.") var json = false

    func run() async throws {
        let spool = try await store.open()
        let stats = try await spool.queueStats()
        if json {
            struct Doc: Encodable {
                var name: String; var paused: Bool; var depth: Int; var counts: [String: Int]; var oldest_pending_age_seconds: Double?
            }
            try printJSON(stats.map { s in
                Doc(name: s.name, paused: s.paused, depth: s.depth,
                    counts: Dictionary(uniqueKeysWithValues: JobState.allCases.map { ($0.rawValue, s.counts[$0] ?? 0) }),
                    oldest_pending_age_seconds: s.oldestPendingAge?.seconds)
            })
            return
        }
        let header = ["QUEUE", "PAUSED"] + JobState.allCases.map { $0.rawValue.uppercased() } + ["OLDEST PENDING"]
        print(header.map { $0.padding(toLength: 12, withPad: " ", startingAt: 0) }.joined())
        for s in stats {
            let cells = [s.name, s.paused ? "yes" : "no"] + JobState.allCases.map { "\(s.counts[$0] ?? 0)" }
                + [s.oldestPendingAge.map { String(format: "%.1fs", $0.seconds) } ?? "-"]
            print(cells.map { $0.padding(toLength: 12, withPad: " ", startingAt: 0) }.joined())
        }
    }
}

struct Pause: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Pause a queue: workers take no new jobs from it.")
    @OptionGroup var store: StoreOptions
    @Argument(help: "Queue name.") var queue: String
    func run() async throws { try await setPaused(true, queue, store) }
}

struct Resume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Resume a paused queue.")
    @OptionGroup var store: StoreOptions
    @Argument(help: "Queue name.") var queue: String
    func run() async throws { try await setPaused(false, queue, store) }
}

private func setPaused(_ paused: Bool, _ queue: String, _ store: StoreOptions) async throws {
    let spool = try await store.open()
    try await spool.store.setPaused(paused, queue: queue)
    print(paused ? "paused \(queue)" : "resumed \(queue)")
}
