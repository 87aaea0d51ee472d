import ArgumentParser
import Foundation
import SpoolClient
import SpoolCore

struct Topics: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show fan-out topics, their subscribers and counts.")
    @OptionGroup var store: StoreOptions
    @Flag(help: "Print JSON instead of a table.") var json = false

    func run() async throws {
        let topics: [TopicDocument]
        do { topics = try await store.backend().topics() } catch { throw explain(error) }
        if json { return try printJSON(topics) }
        var rows = [["TOPIC", "EVENTS", "LAST PUBLISHED", "SUBSCRIBER", "QUEUE", "KIND", "SOURCE", "JOBS"]]
        for topic in topics {
            let head = [topic.topic, "\(topic.events)", topic.last_published_at ?? "-"]
            if topic.subscribers.isEmpty { rows.append(head + ["(none)", "", "", "", ""]) }
            for (n, s) in topic.subscribers.enumerated() {
                rows.append((n == 0 ? head : ["", "", ""]) + [s.name, s.queue, s.kind, s.source, "\(s.jobs)"])
            }
        }
        printTable(rows)
    }
}

struct Publish: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish an event to a topic: one job per matching subscriber, written atomically.")
    @OptionGroup var store: StoreOptions
    @OptionGroup var durability: DurabilityOption
    @Argument(help: "Topic name.") var topic: String
    @Option(help: "Payload as JSON text (every subscriber's job gets it).") var payload = "{}"
    @Option(help: "Attribute name=value, matched by subscribers' filters (repeatable).") var attribute: [String] = []
    @Option(help: "Idempotency key: publishing again with it makes no new jobs.") var idempotencyKey: String?
    @Option(help: "Tenant that owns the event and its jobs (local database only).") var tenant = NewJob.defaultTenant

    func run() async throws {
        guard let value = JSONValue(json: Data(payload.utf8)) else { throw ValidationError("--payload is not valid JSON") }
        var attributes: [String: String] = [:]
        for pair in attribute {
            guard let eq = pair.firstIndex(of: "=") else { throw ValidationError("--attribute must be name=value, not '\(pair)'") }
            attributes[String(pair[..<eq])] = String(pair[pair.index(after: eq)...])
        }
        do {
            try printJSON(try await store.backend(durability: durability).publish(topic: topic, payload: value, attributes: attributes,
                                                            idempotencyKey: idempotencyKey, tenant: tenant))
        } catch { throw explain(error) }
    }
}

struct BatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "batch", abstract: "Print a batch: its state, counts per state and callback job (`spool list --batch ID` lists its jobs).")
    @OptionGroup var store: StoreOptions
    @Argument(help: "Batch id.") var id: String

    func run() async throws {
        let id = try parseJobID(id)
        do { try printJSON(try await store.backend().batch(id)) } catch { throw explain(error) }
    }
}

/// Prints rows as a table whose columns are as wide as their widest cell (nothing cut short).
func printTable(_ rows: [[String]]) {
    let widths = rows.reduce(into: [Int]()) { widths, row in
        for (i, cell) in row.enumerated() {
            if i < widths.count { widths[i] = max(widths[i], cell.count) } else { widths.append(cell.count) }
        }
    }
    for row in rows {
        print(zip(row, widths).map { $0.padding(toLength: $1 + 2, withPad: " ", startingAt: 0) }.joined().trimmingCharacters(in: .whitespaces))
    }
}
