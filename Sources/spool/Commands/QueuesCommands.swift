import ArgumentParser
import Foundation
import SpoolCore

struct Queues: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show every queue with its counts per state.")
    @OptionGroup var store: StoreOptions
    @Flag(help: "Print JSON instead of a table.") var json = false

    func run() async throws {
        let queues: [QueueDocument]
        do { queues = try await store.backend().queues() } catch { throw explain(error) }
        if json {
            try printJSON(queues)
            return
        }
        var rows = [["QUEUE", "PAUSED"] + JobState.allCases.map { $0.rawValue.uppercased() } + ["OLDEST PENDING"]]
        for q in queues {
            rows.append([q.name, q.paused ? "yes" : "no"] + JobState.allCases.map { "\(q.counts[$0.rawValue] ?? 0)" }
                + [q.oldest_pending_age_seconds.map { String(format: "%.1fs", $0) } ?? "-"])
        }
        printTable(rows)
    }
}

struct Workers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the worker registry: every worker process and remote worker, active or lost.")
    @OptionGroup var store: StoreOptions
    @Flag(help: "Print JSON instead of a table.") var json = false

    func run() async throws {
        let workers: [WorkerDocument]
        do { workers = try await store.backend().workers() } catch { throw explain(error) }
        if json {
            try printJSON(workers)
            return
        }
        var rows = [["ID", "STATE", "NAME", "RUNNING", "TENANT", "QUEUES", "LAST SEEN"]]
        for w in workers {
            rows.append([w.id, w.state, w.name, "\(w.running)/\(w.concurrency)", w.tenant ?? "(all)", w.queues.joined(separator: ","), w.last_seen_at])
        }
        printTable(rows)
    }
}

struct Pause: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Pause a queue: workers take no new jobs from it.")
    @OptionGroup var store: StoreOptions
    @OptionGroup var durability: DurabilityOption
    @Argument(help: "Queue name.") var queue: String
    func run() async throws { try await setPaused(true, queue, store, durability) }
}

struct Resume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Resume a paused queue.")
    @OptionGroup var store: StoreOptions
    @OptionGroup var durability: DurabilityOption
    @Argument(help: "Queue name.") var queue: String
    func run() async throws { try await setPaused(false, queue, store, durability) }
}

private func setPaused(_ paused: Bool, _ queue: String, _ store: StoreOptions, _ durability: DurabilityOption) async throws {
    do { try await store.backend(durability: durability).setPaused(paused, queue: queue) } catch { throw explain(error) }
    print(paused ? "paused \(queue)" : "resumed \(queue)")
}
