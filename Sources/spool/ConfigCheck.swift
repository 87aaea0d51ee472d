import Foundation
import SpoolCore
import Yams

/// The file a config came from, to point errors at its lines.
struct ConfigSource: Decodable {
    var path: String
    var root: Node?
    init(path: String, root: Node?) { self.path = path; self.root = root }
    init(from decoder: any Decoder) throws {
        throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "'source' is not a config key"))
    }
}

extension ConfigFile {
    /// Runs `body`; a ``CLIError`` that starts with a field's path (`kinds.x.command[0] ...`)
    /// comes back naming the file and the field's line.
    func located<T>(_ body: (ConfigFile) throws -> T) throws -> T {
        do {
            return try body(self)
        } catch let error as CLIError {
            guard let source, let root = source.root, let node = ConfigCheck.node(at: error.description, in: root), let mark = node.mark else { throw error }
            throw CLIError("config file \(source.path), line \(mark.line): \(error.description)")
        }
    }
}

/// Turns what is wrong with a config file into a message with its line: keys this version
/// does not know (with the nearest known spelling), and values of the wrong type in words.
enum ConfigCheck {
    /// The first key of `node` that `value` (the decoded file) has no field for, as
    /// `, line N: unknown key 'x' in queues.fast (did you mean 'y'?)`. The known keys are the
    /// decoded structs' own properties, so the check cannot drift from the file's format.
    static func unknownKey(in node: Node, of value: Any, path: String = "") -> String? {
        let mirror = Mirror(reflecting: value)
        switch mirror.displayStyle {
        case .optional:
            guard let wrapped = mirror.children.first else { return nil }
            return unknownKey(in: node, of: wrapped.value, path: path)
        case .struct:
            guard case .mapping(let mapping) = node else { return nil }
            let known = mirror.children.compactMap(\.label)
            for (keyNode, valueNode) in mapping {
                guard let key = keyNode.string else { continue }
                if key == "<<" {
                    // A merge key (`<<: *defaults`): its mapping's keys count as this one's.
                    let merged: [Node] = if case .sequence(let many) = valueNode { Array(many) } else { [valueNode] }
                    for node in merged {
                        if let found = unknownKey(in: node, of: value, path: path) { return found }
                    }
                    continue
                }
                guard let field = mirror.children.first(where: { $0.label == key }) else {
                    let place = path.isEmpty ? "at the top level" : "in \(path)"
                    let hint = nearest(key, in: known).map { " (did you mean '\($0)'?)" } ?? " (known: \(known.joined(separator: ", ")))"
                    return "\(line(keyNode)): unknown key '\(key)' \(place)\(hint)"
                }
                if let found = unknownKey(in: valueNode, of: field.value, path: join(path, key)) { return found }
            }
        case .dictionary:
            guard case .mapping(let mapping) = node else { return nil }
            for entry in mirror.children {
                let pair = Array(Mirror(reflecting: entry.value).children)
                guard pair.count == 2, let key = pair[0].value as? String, let valueNode = mapping[key] else { continue }
                if let found = unknownKey(in: valueNode, of: pair[1].value, path: join(path, key)) { return found }
            }
        case .collection:
            guard case .sequence(let sequence) = node else { return nil }
            for (index, (item, itemNode)) in zip(mirror.children, sequence).enumerated() {
                if let found = unknownKey(in: itemNode, of: item.value, path: "\(path)[\(index)]") { return found }
            }
        default:
            break  // numbers, strings, enums (a depth limit, a JSON schema): nothing more to check
        }
        return nil
    }

    /// A YAML node as JSON, reading quoted scalars as strings (the decoder takes `"null"` and
    /// `"on"` for null and true: wrong for a JSON Schema's `type: [string, "null"]` or
    /// `enum: ["on", "off"]`). Plain scalars follow YAML 1.2's core schema.
    static func json(_ node: Node) -> JSONValue {
        switch node {
        case .scalar(let scalar):
            let text = scalar.string
            guard scalar.style == .plain || scalar.style == .any else { return .string(text) }
            switch text {
            case "null", "Null", "NULL", "~", "": return .null
            case "true", "True", "TRUE": return .bool(true)
            case "false", "False", "FALSE": return .bool(false)
            default: break
            }
            if let integer = Int64(text) { return .integer(integer) }
            if let number = Double(text), number.isFinite, text.first.map({ $0.isNumber || $0 == "-" || $0 == "+" || $0 == "." }) == true {
                return .number(number)
            }
            return .string(text)
        case .mapping(let mapping):
            var object: [String: JSONValue] = [:]
            for (key, value) in mapping { object[key.string ?? ""] = json(value) }
            return .object(object)
        case .sequence(let sequence):
            return .array(sequence.map(json))
        }
    }

    /// A decoding error as `, line N: queues.fast.concurrency must be a whole number`.
    static func explain(_ error: DecodingError, root: Node?) -> String {
        func place(_ path: [any CodingKey]) -> (String, String) {
            let name = path.reduce("") { text, key in key.intValue.map { "\(text)[\($0)]" } ?? join(text, key.stringValue) }
            return (root.flatMap { find(path, in: $0) }.map(line) ?? "", name.isEmpty ? "the file" : name)
        }
        switch error {
        case let .typeMismatch(type, context):
            let (at, name) = place(context.codingPath)
            return "\(at): \(name) must be \(words(for: type))"
        case let .valueNotFound(type, context):
            let (at, name) = place(context.codingPath)
            return "\(at): \(name) must be \(words(for: type)), not empty"
        case let .keyNotFound(key, context):
            let (at, name) = place(context.codingPath)
            return "\(at): \(name) needs '\(key.stringValue)'"
        case let .dataCorrupted(context):
            let (at, name) = place(context.codingPath)
            return "\(at): \(name): \(context.debugDescription)"
        @unknown default:
            return " is not valid: \(error)"
        }
    }

    static func words(for type: Any.Type) -> String {
        switch type {
        case is Int.Type, is Int64.Type: return "a whole number"
        case is Double.Type: return "a number"
        case is String.Type: return "text"
        case is Bool.Type: return "true or false"
        default:
            let name = String(describing: type)
            if name.hasPrefix("Array") || name.contains("Sequence") || name.hasPrefix("[") && !name.contains(":") { return "a list ([a, b] or lines starting with '- ')" }
            return "a mapping (key: value lines, or { key: value })"
        }
    }

    /// The node of the field path that `message` starts with (`kinds.video.thumb.command[0]`;
    /// names may hold dots, so the longest key that fits is taken at each level).
    static func node(at message: String, in root: Node) -> Node? {
        var rest = Substring(message.prefix { $0 != " " && $0 != ":" })
        var current = root, found = false
        while !rest.isEmpty {
            switch current {
            case .mapping(let mapping):
                let keys = mapping.keys.compactMap(\.string).filter { key in
                    rest.hasPrefix(key) && (rest.count == key.count || [".", "[", "/"].contains(rest.dropFirst(key.count).first.map(String.init) ?? ""))
                }
                guard let key = keys.max(by: { $0.count < $1.count }), let next = mapping[key] else { return found ? current : nil }
                current = next
                rest = rest.dropFirst(key.count)
            case .sequence(let sequence):
                guard rest.hasPrefix("["), let close = rest.firstIndex(of: "]"), let index = Int(rest[rest.index(after: rest.startIndex)..<close]),
                      index < sequence.count else { return found ? current : nil }
                current = sequence[index]
                rest = rest[rest.index(after: close)...]
            default:
                return found ? current : nil
            }
            found = true
            if rest.hasPrefix(".") { rest = rest.dropFirst() }
            if rest.hasPrefix("/") { return current }  // a path inside a schema: its line is close enough
        }
        return found ? current : nil
    }

    private static func find(_ path: [any CodingKey], in node: Node) -> Node? {
        var current = node
        for key in path {
            switch current {
            case .mapping(let mapping):
                guard let next = mapping[key.stringValue] else { return current }
                current = next
            case .sequence(let sequence):
                guard let index = key.intValue, index < sequence.count else { return current }
                current = sequence[index]
            default:
                return current
            }
        }
        return current
    }

    private static func line(_ node: Node) -> String { node.mark.map { ", line \($0.line)" } ?? "" }
    private static func join(_ path: String, _ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// The known key closest to `key` in spelling, if it is close enough to be a typo.
    static func nearest(_ key: String, in known: [String]) -> String? {
        let scored = known.map { ($0, distance(key.lowercased(), $0)) }.min { $0.1 < $1.1 }
        guard let (best, score) = scored, score <= max(2, key.count / 3) else { return nil }
        return best
    }

    /// Levenshtein distance.
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var row = Array(0...b.count)
        for i in 1...max(1, a.count) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in 1...max(1, b.count) where !b.isEmpty {
                let saved = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = saved
            }
        }
        return a.isEmpty ? b.count : row[b.count]
    }
}
