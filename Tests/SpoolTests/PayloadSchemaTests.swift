import Foundation
import SpoolCore
import Testing

@Suite("Payload schemas")
struct PayloadSchemaTests {
    private func schema(_ json: String) throws -> PayloadSchema {
        try PayloadSchema(try #require(JSONValue(json: Data(json.utf8))))
    }

    /// The failing field and reason, or nil when the payload matches.
    private func failure(_ schema: PayloadSchema, _ payload: String) -> (field: String, reason: String)? {
        do { try schema.check(Data(payload.utf8)); return nil } catch {
            if case let .invalid(field, reason) = error { return (field, reason) }
            return ("?", "\(error)")
        }
    }

    @Test("types, required, nested paths, additionalProperties, items, enum, const, bounds, pattern and combinators")
    func checks() throws {
        let s = try schema("""
            {"type":"object","required":["url","sizes"],"additionalProperties":false,
             "properties":{"url":{"type":"string","pattern":"^https?://","maxLength":100},
                           "sizes":{"type":"array","minItems":1,"maxItems":3,"uniqueItems":true,
                                    "items":{"type":"integer","minimum":16,"exclusiveMaximum":4096,"multipleOf":2}},
                           "mode":{"enum":["fit","fill"]},"version":{"const":2},
                           "owner":{"type":["string","null"]},
                           "a/b":{"type":"boolean"},
                           "either":{"anyOf":[{"type":"string"},{"type":"integer"}]},
                           "one":{"oneOf":[{"type":"integer"},{"type":"number","minimum":10}]},
                           "notnull":{"not":{"type":"null"}}}}
            """)
        #expect(failure(s, #"{"url":"https://x","sizes":[16,32],"mode":"fit","version":2,"owner":null,"either":3,"one":15.5,"notnull":1}"#) == nil)
        #expect(failure(s, #"{"url":"https://x","sizes":[16.0]}"#) == nil, "16.0 is an integer")
        let cases: [(String, String, String)] = [
            (#"[1]"#, "payload", "must be an object, not an array"),
            (#"{"sizes":[16]}"#, "payload", "must have the property 'url'"),
            (#"{"url":"ftp://x","sizes":[16]}"#, "payload/url", "must match the pattern ^https?://"),
            (#"{"url":"https://x","sizes":[]}"#, "payload/sizes", "must have at least 1 items"),
            (#"{"url":"https://x","sizes":[16,16]}"#, "payload/sizes", "must not repeat an item"),
            (#"{"url":"https://x","sizes":[16,"big"]}"#, "payload/sizes/1", "must be an integer, not a string"),
            (#"{"url":"https://x","sizes":[16,17]}"#, "payload/sizes/1", "must be a multiple of 2"),
            (#"{"url":"https://x","sizes":[4096]}"#, "payload/sizes/0", "must be less than 4096"),
            (#"{"url":"https://x","sizes":[8]}"#, "payload/sizes/0", "must be at least 16"),
            (#"{"url":"https://x","sizes":[16],"mode":"stretch"}"#, "payload/mode", #"must be one of "fit", "fill""#),
            (#"{"url":"https://x","sizes":[16],"version":3}"#, "payload/version", "must be 2"),
            (#"{"url":"https://x","sizes":[16],"owner":5}"#, "payload/owner", "must be a string or null, not an integer"),
            (#"{"url":"https://x","sizes":[16],"a/b":1}"#, "payload/a~1b", "must be a boolean, not an integer"),
            (#"{"url":"https://x","sizes":[16],"extra":1}"#, "payload/extra", "is not an allowed property"),
            (#"{"url":"https://x","sizes":[16],"either":true}"#, "payload/either", "must match at least one of the schemas in anyOf"),
            (#"{"url":"https://x","sizes":[16],"one":12}"#, "payload/one", "must match exactly one of the schemas in oneOf (matches 2)"),
            (#"{"url":"https://x","sizes":[16],"notnull":null}"#, "payload/notnull", "must not match the schema in 'not'"),
        ]
        for (payload, field, reason) in cases {
            let got = failure(s, payload)
            #expect(got?.field == field && got?.reason == reason, "\(payload): \(String(describing: got))")
        }
        // multipleOf with a relative tolerance: binary floating point cannot hold 0.01 exactly.
        let cents = try schema(#"{"multipleOf":0.01}"#)
        for amount in ["1000000.07", "99999999.99", "0.3", "12"] { #expect(failure(cents, amount) == nil, "\(amount)") }
        #expect(failure(cents, "0.005")?.reason == "must be a multiple of 0.01")
        #expect(failure(try schema("false"), "1")?.reason == "no value is allowed here")
        #expect(failure(try schema("true"), "1") == nil)
    }

    @Test("a schema with a keyword Spool does not check, or a malformed one, is refused when it is made")
    func refusals() throws {
        for (json, path) in [(##"{"$ref":"#/x"}"##, "payload_schema/$ref"), (#"{"type":"text"}"#, "payload_schema/type"),
                             (#"{"properties":{"a":{"pattern":"("}}}"#, "payload_schema/properties/a/pattern"),
                             (#"{"items":{"minItems":-1}}"#, "payload_schema/items/minItems"), (#"[1]"#, "payload_schema")] {
            #expect(throws: SpoolError.self, "\(json)") { try schema(json) }
            do { _ = try schema(json) } catch {
                if case let .invalid(field, _) = error as? SpoolError { #expect(field == path, "\(json)") }
            }
        }
        // Annotations are allowed.
        _ = try schema(#"{"$schema":"https://json-schema.org/draft/2020-12/schema","title":"t","description":"d","format":"uri","type":"string"}"#)
    }

    @Test("Spool.enqueue refuses a payload that fails its kind's schema and writes nothing; other kinds are not checked")
    func enqueue() async throws {
        var config = fastConfiguration()
        config.payloadSchemas["img.resize"] = try schema(#"{"type":"object","required":["url"]}"#)
        try await withStore(.sqlite) { store in
            let spool = Spool(store: store, configuration: config)
            await expectSpoolError({ if case .invalid("payload", let why) = $0 { why.contains("'url'") } else { false } }) {
                _ = try await spool.enqueue([NewJob(kind: "img.other"), NewJob(kind: "img.resize", payload: Data("{}".utf8))])
            }
            #expect(try await spool.list(JobFilter()).jobs.isEmpty, "a refused batch wrote jobs")
            _ = try await spool.enqueue(NewJob(kind: "img.resize", payload: Data(#"{"url":"u"}"#.utf8)))
            spool.setPayloadSchema(nil, forKind: "img.resize")
            _ = try await spool.enqueue(NewJob(kind: "img.resize", payload: Data("{}".utf8)))
            #expect(try await spool.list(JobFilter()).jobs.count == 2)
        }
    }
}
