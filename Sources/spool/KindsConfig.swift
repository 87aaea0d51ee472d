import Foundation
import NIOHTTP1
import SpoolCore
import SpoolKinds

extension ConfigFile {
    /// One entry of the `kinds` section: a service to call (`http`), a program to run
    /// (`command`), or neither (a kind run elsewhere); each may have a `payload_schema`.
    struct KindFile: Decodable {
        struct HTTPFile: Decodable {
            var url: String
            var method: String?
            var timeout_seconds: Double?
            var headers: [String: String]?
        }
        var http: HTTPFile?
        /// The program (an absolute path) and its arguments; no shell.
        var command: [String]?
        var timeout_seconds: Double?
        /// Commands: between SIGTERM and SIGKILL when an attempt is stopped (default 5).
        var grace_seconds: Double?
        /// Commands: variables added to the environment.
        var env: [String: String]?
        var working_directory: String?
        /// A JSON Schema that payloads must match at enqueue (any kind, Swift ones included).
        var payload_schema: JSONValue?
    }
}

/// The `kinds` section, checked: what this process runs, the schemas, and how each kind runs.
struct DeclaredKinds {
    var services: [HTTPServiceKind] = []
    var commands: [CommandKind] = []
    /// Kind → `http`, `command` or `elsewhere` (for the gateway).
    var runners: [String: String] = [:]
}

extension ConfigFile {
    /// The `kinds` section, checked, with `${VAR}` read from `environment`. Every error names
    /// the field; values are not shown (they are often secrets).
    func declaredKinds(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> DeclaredKinds {
        try located { try $0.declaredKindFields(environment: environment) }
    }

    private func declaredKindFields(environment: [String: String]) throws -> DeclaredKinds {
        var declared = DeclaredKinds()
        for (name, kind) in (kinds ?? [:]).sorted(by: { $0.key < $1.key }) {
            let field = "kinds.\(name)"
            guard NewJob.isValidName(name, maxLength: 128) else { throw CLIError("\(field): not a valid kind name") }
            guard !name.hasPrefix("spool.") else { throw CLIError("\(field): kind names starting with 'spool.' are Spool's own") }
            let timeout = try kind.timeout_seconds.map { try positive($0, "\(field).timeout_seconds") }
            switch (kind.http, kind.command) {
            case (.some, .some):
                throw CLIError("\(field): give either http or command, not both")
            case (let http?, nil):
                for (key, given) in [("grace_seconds", kind.grace_seconds != nil), ("env", kind.env != nil), ("working_directory", kind.working_directory != nil)] where given {
                    throw CLIError("\(field).\(key) is for command kinds only")
                }
                if timeout != nil && http.timeout_seconds != nil { throw CLIError("\(field): give timeout_seconds once (here or under http)") }
                var service = try Self.service(name, http, field: field, environment)
                service.timeout = service.timeout ?? timeout
                declared.services.append(service)
                declared.runners[name] = "http"
            case (nil, let command?):
                declared.commands.append(try Self.command(name, command, kind, timeout: timeout, field: field, environment))
                declared.runners[name] = "command"
            case (nil, nil):
                for (key, given) in [("timeout_seconds", kind.timeout_seconds != nil), ("grace_seconds", kind.grace_seconds != nil),
                                     ("env", kind.env != nil), ("working_directory", kind.working_directory != nil)] where given {
                    throw CLIError("\(field).\(key) needs http or command")
                }
                declared.runners[name] = "elsewhere"
            }
        }
        return declared
    }

    private static func service(_ name: String, _ http: KindFile.HTTPFile, field: String, _ environment: [String: String]) throws -> HTTPServiceKind {
        let url = try expand(http.url, "\(field).http.url", environment)
        guard let parsed = URL(string: url), parsed.scheme == "http" || parsed.scheme == "https", parsed.host != nil else {
            throw CLIError("\(field).http.url must be an absolute http or https URL")
        }
        let method: HTTPMethod
        switch (http.method ?? "POST").uppercased() {
        case "POST": method = .POST
        case "PUT": method = .PUT
        default: throw CLIError("\(field).http.method must be POST or PUT")
        }
        var headers: [(name: String, value: String)] = []
        for (header, value) in (http.headers ?? [:]).sorted(by: { $0.key < $1.key }) {
            let expanded = try expand(value, "\(field).http.headers.\(header)", environment)
            if let problem = HTTPServiceKind.checkHeader(name: header, value: expanded) {
                throw CLIError("\(field).http.headers.\(header) \(problem)")
            }
            headers.append((header, expanded))
        }
        return HTTPServiceKind(kind: name, url: url, method: method,
                               timeout: try http.timeout_seconds.map { try positive($0, "\(field).http.timeout_seconds") }, headers: headers)
    }

    private static func command(_ name: String, _ command: [String], _ kind: KindFile, timeout: Duration?, field: String,
                                _ environment: [String: String]) throws -> CommandKind {
        guard let program = command.first else { throw CLIError("\(field).command needs a program: [\"/path/to/program\", \"arg\", ...]") }
        let arguments = try command.enumerated().map { try expand($0.element, "\(field).command[\($0.offset)]", environment) }
        if let problem = CommandKind.checkProgram(arguments[0]) {
            throw CLIError("\(field).command[0] (\(program)) \(problem)")
        }
        var variables: [String: String] = [:]
        for (key, value) in kind.env ?? [:] {
            guard !key.isEmpty, !key.contains("="), !key.hasPrefix("SPOOL_JOB_") else { throw CLIError("\(field).env.\(key) is not a usable variable name") }
            variables[key] = try expand(value, "\(field).env.\(key)", environment)
        }
        if let directory = kind.working_directory {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw CLIError("\(field).working_directory (\(directory)) is not a directory")
            }
        }
        let grace = try kind.grace_seconds.map { try positive($0, "\(field).grace_seconds") } ?? .seconds(5)
        return CommandKind(kind: name, arguments: arguments, timeout: timeout, gracePeriod: grace,
                           environment: variables, workingDirectory: kind.working_directory)
    }

    /// `gateway.public_url`, checked.
    func publicURL() throws -> String? {
        try located { file in
            guard let text = file.gateway?.public_url else { return nil }
            guard let url = URL(string: text), url.scheme == "http" || url.scheme == "https", url.host != nil, url.query == nil else {
                throw CLIError("gateway.public_url must be an absolute http or https URL")
            }
            return text
        }
    }

    /// The kinds' payload schemas, checked (every command applies them: see `apply(to:)`).
    func payloadSchemas() throws -> [String: PayloadSchema] {
        var schemas: [String: PayloadSchema] = [:]
        for (name, kind) in kinds ?? [:] {
            guard let schema = kind.payload_schema else { continue }
            do { schemas[name] = try PayloadSchema(schema) } catch { throw CLIError("kinds.\(name).\(Self.schemaProblem(error))") }
        }
        return schemas
    }

    /// `payload_schema/properties/size: why` from a schema's error.
    private static func schemaProblem(_ error: SpoolError) -> String {
        if case let .invalid(path, reason) = error { return "\(path): \(reason)" }
        return "payload_schema: \(error)"
    }

    /// `${VAR}` replaced by the environment's value; a variable that is not set is an error.
    static func expand(_ text: String, _ field: String, _ environment: [String: String]) throws -> String {
        var output = ""
        var rest = Substring(text)
        while let start = rest.range(of: "${") {
            output += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else { throw CLIError("\(field): '${' without '}'") }
            let name = String(rest[start.upperBound..<end])
            guard let value = environment[name], !value.isEmpty else { throw CLIError("\(field) uses ${\(name)}, which is not set or empty") }
            output += value
            rest = rest[rest.index(after: end)...]
        }
        return output + rest
    }
}
