import ArgumentParser
import Foundation
import SpoolCore
import SpoolGateway

@main
struct SpoolCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spool",
        abstract: "Spool: a durable background-job system.",
        discussion: "Runs on an embedded SQLite file by default (./spool.sqlite, or SPOOL_DATABASE).",
        version: SpoolVersion.current,
        subcommands: [
            Serve.self, Worker.self, Enqueue.self, Get.self, List.self, Cancel.self, Retry.self,
            Watch.self, Queues.self, Workers.self, Pause.self, Resume.self, Topics.self, Publish.self, BatchCommand.self,
            Migrate.self, Bench.self, Token.self, Seed.self,
        ])
}

/// Prints a value as pretty JSON on standard output.
func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    FileHandle.standardOutput.write(try encoder.encode(value))
    FileHandle.standardOutput.write(Data("\n".utf8))
}

func parseJobID(_ s: String) throws -> JobID {
    guard let id = JobID(s) else { throw ValidationError("'\(s)' is not a job id (a UUID such as 0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b)") }
    return id
}

/// Maps engine errors to readable messages for the terminal.
func explain(_ error: any Error) -> any Error {
    if let e = error as? SpoolError { return CLIError(e.description) }
    if let e = error as? GatewayError { return CLIError(e.description) }
    return error
}
