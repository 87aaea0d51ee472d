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
            Serve.self, Worker.self, Enqueue.self, Get.self, List.self, Cancel.self, Retry.self, Delete.self,
            Watch.self, Events.self, Queues.self, Workers.self, Pause.self, Resume.self, Redrive.self, Purge.self,
            Topics.self, Publish.self, BatchCommand.self,
            Migrate.self, Bench.self, Token.self, Seed.self,
        ])

    /// Like the library's, except that an input error found while a subcommand runs (a bad
    /// job id, an unknown state) prints that subcommand's usage, not the whole tool's.
    static func main() async {
        let command: any ParsableCommand
        do { command = try parseAsRoot() } catch { exit(withError: error) }
        do {
            if var asynchronous = command as? any AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                var synchronous = command
                try synchronous.run()
            }
        } catch let error as ValidationError {
            let usage = usageString(for: type(of: command))
            let path = usage.split(separator: " ").prefix { !"[<-".contains($0.first ?? "-") }.joined(separator: " ")
            FileHandle.standardError.write(Data("Error: \(error.message)\nUsage: \(usage)\n  See '\(path) --help' for more information.\n".utf8))
            exit(withError: ExitCode.validationFailure)
        } catch {
            exit(withError: error)
        }
    }
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
