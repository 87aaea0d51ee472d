import ArgumentParser
import Foundation
import SpoolCore

// What an operator does to jobs and queues beyond cancel and retry: the CLI side of
// DELETE /v1/jobs/{id}, POST /v1/queues/{name}/retry-failed and /purge, and GET /v1/events.

struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete a finished job: completed, failed or cancelled (its record and events go; followers get a 'deleted' event).")
    @OptionGroup var store: StoreOptions
    @OptionGroup var durability: DurabilityOption
    @Argument(help: "Job id.") var id: String

    func run() async throws {
        let id = try parseJobID(id)
        do { try await store.backend(durability: durability).delete(id) } catch { throw explain(error) }
        print("deleted \(id)")
    }
}

struct Redrive: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Retry every failed job of a queue: the dead-letter redrive (POST /v1/queues/{name}/retry-failed).")
    @OptionGroup var store: StoreOptions
    @OptionGroup var durability: DurabilityOption
    @Argument(help: "Queue name.") var queue: String
    @Flag(help: "Print JSON: {queue, retried}.") var json = false

    func run() async throws {
        let count: Int
        do { count = try await store.backend(durability: durability).retryFailed(queue: queue) } catch { throw explain(error) }
        struct Retried: Encodable { var queue: String; var retried: Int }
        if json { return try printJSON(Retried(queue: queue, retried: count)) }
        print("retried \(count) failed job(s) of \(queue)")
    }
}

struct Purge: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Delete every pending and scheduled job of a queue; running, waiting and finished jobs stay.")
    @OptionGroup var store: StoreOptions
    @OptionGroup var durability: DurabilityOption
    @Argument(help: "Queue name.") var queue: String
    @Flag(help: "Really delete (purge cannot be undone).") var yes = false
    @Flag(help: "Print JSON: {queue, purged}.") var json = false

    func validate() throws {
        guard yes else { throw ValidationError("purge deletes jobs for good: add --yes to confirm") }
    }

    func run() async throws {
        let count: Int
        do { count = try await store.backend(durability: durability).purge(queue: queue) } catch { throw explain(error) }
        struct Purged: Encodable { var queue: String; var purged: Int }
        if json { return try printJSON(Purged(queue: queue, purged: count)) }
        print("purged \(count) job(s) of \(queue)")
    }
}

struct Events: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Follow the job event feed: one JSON object per line ({id, type, ...event}), from now or after an event id.")
    @OptionGroup var store: StoreOptions
    @Option(help: "Only this queue.") var queue: String?
    @Option(help: "Only this kind.") var kind: String?
    @Option(help: "Start after this event id (the 'id' of a line printed before) instead of now.") var after: Int64?
    @Option(help: "Stop after this many events (default: follow until interrupted).") var limit: Int?

    func validate() throws {
        if let limit, limit < 1 { throw ValidationError("--limit must be at least 1") }
        if let after, after < 0 { throw ValidationError("--after must be an event id (0 or more)") }
    }

    func run() async throws {
        var printed = 0
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        do {
            for try await event in try await store.backend().feed(queue: queue, kind: kind, after: after) {
                var fields: [String: JSONValue] = ["type": .string(event.type)]
                if case .object(let data) = event.data { fields.merge(data) { mine, _ in mine } } else { fields["data"] = event.data }
                if let id = event.id, let n = Double(id) { fields["id"] = .number(n) }
                FileHandle.standardOutput.write(try encoder.encode(JSONValue.object(fields)) + Data("\n".utf8))
                printed += 1
                if let limit, printed >= limit { return }
            }
        } catch { throw explain(error) }
    }
}
