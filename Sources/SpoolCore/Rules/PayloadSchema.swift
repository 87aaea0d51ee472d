import Foundation

/// A JSON Schema that a kind's payloads must match, checked at enqueue (a payload that does
/// not match is refused with the failing path, instead of failing later in a worker).
///
/// The keywords of JSON Schema 2020-12 for validating one document are supported: `type`,
/// `enum`, `const`, `properties`, `required`, `additionalProperties`, `minProperties`,
/// `maxProperties`, `items`, `minItems`, `maxItems`, `uniqueItems`, `minLength`, `maxLength`,
/// `pattern`, `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `multipleOf`,
/// `allOf`, `anyOf`, `oneOf`, `not`, and `true`/`false` as schemas. Annotations (`title`,
/// `description`, `format`, `default`, `examples`, ...) are allowed and not checked. Any other
/// keyword (`$ref` among them) is refused when the schema is made, so that nothing the
/// operator wrote is silently ignored.
public struct PayloadSchema: Sendable {
    public let document: JSONValue
    private let patterns: Patterns

    static let checked: Set<String> = [
        "type", "enum", "const", "properties", "required", "additionalProperties", "minProperties", "maxProperties",
        "items", "minItems", "maxItems", "uniqueItems", "minLength", "maxLength", "pattern",
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "allOf", "anyOf", "oneOf", "not",
    ]
    static let annotations: Set<String> = [
        "$schema", "$id", "$comment", "title", "description", "default", "examples", "format", "deprecated", "readOnly", "writeOnly",
    ]
    static let types: Set<String> = ["null", "boolean", "object", "array", "number", "string", "integer"]

    /// Checks that every keyword is one this type checks; the error names the schema path.
    public init(_ document: JSONValue) throws(SpoolError) {
        var patterns: [String: NSRegularExpression] = [:]
        try Self.compile(document, at: "", patterns: &patterns)
        self.document = document
        self.patterns = Patterns(patterns)
    }

    /// Throws ``SpoolError/invalid(field:reason:)`` naming the first failing place, e.g.
    /// `payload/items/2/size`.
    public func check(_ payload: Data) throws(SpoolError) {
        guard let value = JSONValue(json: payload) else { throw .invalid(field: "payload", reason: "must be valid JSON") }
        if let failure = firstFailure(document, value, at: "") {
            throw .invalid(field: "payload" + failure.path, reason: failure.reason)
        }
    }

    // MARK: Checking

    private typealias Failure = (path: String, reason: String)

    private func firstFailure(_ schema: JSONValue, _ value: JSONValue, at path: String) -> Failure? {
        switch schema {
        case .bool(true): return nil
        case .bool(false): return (path, "no value is allowed here")
        case .object(let keywords): return firstFailure(keywords, value, at: path)
        default: return nil
        }
    }

    private func firstFailure(_ s: [String: JSONValue], _ value: JSONValue, at path: String) -> Failure? {
        if let type = s["type"] {
            let allowed: [String] = if case .string(let one) = type { [one] } else if case .array(let many) = type { many.compactMap(\.stringValue) } else { [] }
            if !allowed.contains(where: { Self.matches(value, type: $0) }) {
                return (path, "must be \(allowed.map(Self.article).joined(separator: " or ")), not \(Self.article(Self.typeName(value)))")
            }
        }
        if case .array(let options)? = s["enum"], !options.contains(value) {
            return (path, "must be one of \(Self.list(options))")
        }
        if let constant = s["const"], constant != value { return (path, "must be \(Self.text(constant))") }

        switch value {
        case .object(let object):
            if case .array(let required)? = s["required"] {
                for case .string(let name) in required where object[name] == nil {
                    return (path, "must have the property '\(name)'")
                }
            }
            if let n = s["minProperties"]?.intValue, object.count < n { return (path, "must have at least \(n) properties") }
            if let n = s["maxProperties"]?.intValue, object.count > n { return (path, "must have at most \(n) properties") }
            let properties = s["properties"]?.objectValue ?? [:]
            for (name, child) in object.sorted(by: { $0.key < $1.key }) {
                let childPath = path + "/" + Self.escape(name)
                if let schema = properties[name] {
                    if let failure = firstFailure(schema, child, at: childPath) { return failure }
                } else if let extra = s["additionalProperties"] {
                    if case .bool(false) = extra { return (childPath, "is not an allowed property") }
                    if let failure = firstFailure(extra, child, at: childPath) { return failure }
                }
            }
        case .array(let items):
            if let n = s["minItems"]?.intValue, items.count < n { return (path, "must have at least \(n) items") }
            if let n = s["maxItems"]?.intValue, items.count > n { return (path, "must have at most \(n) items") }
            if case .bool(true)? = s["uniqueItems"], Set(items).count != items.count { return (path, "must not repeat an item") }
            if let schema = s["items"] {
                for (index, item) in items.enumerated() {
                    if let failure = firstFailure(schema, item, at: "\(path)/\(index)") { return failure }
                }
            }
        case .string(let string):
            let length = string.unicodeScalars.count
            if let n = s["minLength"]?.intValue, length < n { return (path, "must be at least \(n) characters long") }
            if let n = s["maxLength"]?.intValue, length > n { return (path, "must be at most \(n) characters long") }
            if case .string(let pattern)? = s["pattern"], let regex = patterns.regexes[pattern],
               regex.firstMatch(in: string, range: NSRange(string.startIndex..., in: string)) == nil {
                return (path, "must match the pattern \(pattern)")
            }
        case .integer, .number:
            let number = value.doubleValue!
            if let limit = s["minimum"]?.doubleValue, number < limit { return (path, "must be at least \(Self.text(s["minimum"]!))") }
            if let limit = s["maximum"]?.doubleValue, number > limit { return (path, "must be at most \(Self.text(s["maximum"]!))") }
            if let limit = s["exclusiveMinimum"]?.doubleValue, number <= limit { return (path, "must be more than \(Self.text(s["exclusiveMinimum"]!))") }
            if let limit = s["exclusiveMaximum"]?.doubleValue, number >= limit { return (path, "must be less than \(Self.text(s["exclusiveMaximum"]!))") }
            if let step = s["multipleOf"]?.doubleValue, step > 0 {
                let quotient = number / step
                // Relative tolerance: 1000000.07 / 0.01 is 100000006.99999999 in binary floating point.
                if abs(quotient - quotient.rounded()) > 1e-9 * max(1, abs(quotient)) { return (path, "must be a multiple of \(Self.text(s["multipleOf"]!))") }
            }
        default:
            break
        }

        if case .array(let all)? = s["allOf"] {
            for schema in all { if let failure = firstFailure(schema, value, at: path) { return failure } }
        }
        if case .array(let any)? = s["anyOf"], !any.contains(where: { firstFailure($0, value, at: path) == nil }) {
            return (path, "must match at least one of the schemas in anyOf")
        }
        if case .array(let one)? = s["oneOf"] {
            let matching = one.filter { firstFailure($0, value, at: path) == nil }.count
            if matching != 1 { return (path, "must match exactly one of the schemas in oneOf (matches \(matching))") }
        }
        if let not = s["not"], firstFailure(not, value, at: path) == nil { return (path, "must not match the schema in 'not'") }
        return nil
    }

    static func matches(_ value: JSONValue, type: String) -> Bool {
        switch (type, value) {
        case ("null", .null), ("boolean", .bool), ("object", .object), ("array", .array), ("string", .string),
             ("number", .integer), ("number", .number), ("integer", .integer): true
        case ("integer", .number(let n)): n.rounded() == n
        default: false
        }
    }

    static func typeName(_ value: JSONValue) -> String {
        switch value {
        case .null: "null"
        case .bool: "boolean"
        case .object: "object"
        case .array: "array"
        case .string: "string"
        case .integer: "integer"
        case .number(let n): n.rounded() == n ? "integer" : "number"
        }
    }

    static func article(_ type: String) -> String {
        switch type {
        case "null": "null"
        case "integer", "object", "array": "an \(type)"
        default: "a \(type)"
        }
    }

    static func text(_ value: JSONValue) -> String { String(decoding: value.jsonData, as: UTF8.self) }
    static func list(_ values: [JSONValue]) -> String { values.prefix(10).map(text).joined(separator: ", ") + (values.count > 10 ? ", ..." : "") }
    /// A property name as a JSON Pointer token.
    static func escape(_ name: String) -> String {
        name.replacingOccurrences(of: "~", with: "~0").replacingOccurrences(of: "/", with: "~1")
    }

    // MARK: Compiling

    private static func compile(_ schema: JSONValue, at path: String, patterns: inout [String: NSRegularExpression]) throws(SpoolError) {
        func bad(_ where_: String, _ why: String) -> SpoolError { .invalid(field: "payload_schema\(where_)", reason: why) }
        switch schema {
        case .bool: return
        case .object(let keywords):
            for (keyword, value) in keywords.sorted(by: { $0.key < $1.key }) {
                let here = "\(path)/\(escape(keyword))"
                if annotations.contains(keyword) { continue }
                guard checked.contains(keyword) else {
                    throw bad(here, "'\(keyword)' is not a keyword Spool checks (supported: \(checked.sorted().joined(separator: ", ")))")
                }
                switch keyword {
                case "properties":
                    guard case .object(let properties) = value else { throw bad(here, "must be an object of schemas") }
                    for (name, child) in properties { try compile(child, at: "\(here)/\(escape(name))", patterns: &patterns) }
                case "items", "additionalProperties", "not":
                    try compile(value, at: here, patterns: &patterns)
                case "allOf", "anyOf", "oneOf":
                    guard case .array(let list) = value, !list.isEmpty else { throw bad(here, "must be a non-empty array of schemas") }
                    for (index, child) in list.enumerated() { try compile(child, at: "\(here)/\(index)", patterns: &patterns) }
                case "type":
                    let names: [JSONValue] = if case .array(let many) = value { many } else { [value] }
                    guard !names.isEmpty, names.allSatisfy({ $0.stringValue.map(types.contains) == true }) else {
                        throw bad(here, "must name one or more of \(types.sorted().joined(separator: ", "))")
                    }
                case "required":
                    guard case .array(let names) = value, names.allSatisfy({ $0.stringValue != nil }) else { throw bad(here, "must be an array of property names") }
                case "enum":
                    guard case .array = value else { throw bad(here, "must be an array") }
                case "pattern":
                    guard case .string(let pattern) = value, let regex = try? NSRegularExpression(pattern: pattern) else {
                        throw bad(here, "must be a valid regular expression")
                    }
                    patterns[pattern] = regex
                case "minProperties", "maxProperties", "minItems", "maxItems", "minLength", "maxLength":
                    guard let n = value.intValue, n >= 0 else { throw bad(here, "must be a whole number, 0 or more") }
                case "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum":
                    guard value.doubleValue != nil else { throw bad(here, "must be a number") }
                case "multipleOf":
                    guard let n = value.doubleValue, n > 0 else { throw bad(here, "must be a number above 0") }
                case "uniqueItems":
                    guard case .bool = value else { throw bad(here, "must be true or false") }
                default:
                    break  // const: any value
                }
            }
        default:
            throw bad(path, "a schema must be an object or true/false")
        }
    }

    /// Compiled patterns. `NSRegularExpression` is immutable and safe to share across threads.
    private final class Patterns: @unchecked Sendable {
        let regexes: [String: NSRegularExpression]
        init(_ regexes: [String: NSRegularExpression]) { self.regexes = regexes }
    }
}

extension JSONValue {
    var stringValue: String? { if case .string(let s) = self { s } else { nil } }
    var objectValue: [String: JSONValue]? { if case .object(let o) = self { o } else { nil } }
    var intValue: Int? {
        switch self {
        case .integer(let i): Int(exactly: i)
        case .number(let n): n.rounded() == n ? Int(exactly: n) : nil
        default: nil
        }
    }
}
