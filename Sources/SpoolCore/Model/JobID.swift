import Foundation
import Synchronization

/// A job's identifier: a UUIDv7 (RFC 9562), so ids sort by creation time.
///
/// Ids made by one process are strictly increasing: within one millisecond the 12-bit
/// `rand_a` field is used as a counter (RFC 9562, section 6.2, method 1).
public struct JobID: Hashable, Sendable, Comparable, CustomStringConvertible, Codable {
    public let uuid: UUID

    public init(uuid: UUID) { self.uuid = uuid }

    /// Parses the canonical textual form (`0192f3c4-...`); `nil` for anything else.
    public init?(_ string: String) {
        guard string.utf8.count == 36, let uuid = UUID(uuidString: string) else { return nil }
        self.uuid = uuid
    }

    /// The lowercase canonical form, as stored and shown to clients.
    public var description: String {
        let hex: [UInt8] = Array("0123456789abcdef".utf8)
        return withUnsafeBytes(of: uuid.uuid) { bytes in
            String(unsafeUninitializedCapacity: 36) { out in
                var i = 0
                for (n, byte) in bytes.enumerated() {
                    if n == 4 || n == 6 || n == 8 || n == 10 { out[i] = UInt8(ascii: "-"); i += 1 }
                    out[i] = hex[Int(byte >> 4)]
                    out[i + 1] = hex[Int(byte & 0x0F)]
                    i += 2
                }
                return i
            }
        }
    }

    /// The creation time encoded in the id (millisecond precision).
    public var timestamp: Date {
        let b = uuid.uuid
        let ms = UInt64(b.0) << 40 | UInt64(b.1) << 32 | UInt64(b.2) << 24 | UInt64(b.3) << 16 | UInt64(b.4) << 8 | UInt64(b.5)
        return Date(timeIntervalSince1970: Double(ms) / 1000)
    }

    public static func < (a: JobID, b: JobID) -> Bool { a.description < b.description }

    public init(from decoder: Decoder) throws {
        let s = try decoder.singleValueContainer().decode(String.self)
        guard let id = JobID(s) else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a job id: \(s)"))
        }
        self = id
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(description)
    }

    /// The smallest id a job created at `date` (to the millisecond) can have: every job created
    /// earlier has a smaller id.
    public static func lowerBound(at date: Date) -> JobID {
        let ms = UInt64(max(0, date.timeIntervalSince1970 * 1000))
        let bytes: uuid_t = (
            UInt8(truncatingIfNeeded: ms >> 40), UInt8(truncatingIfNeeded: ms >> 32),
            UInt8(truncatingIfNeeded: ms >> 24), UInt8(truncatingIfNeeded: ms >> 16),
            UInt8(truncatingIfNeeded: ms >> 8), UInt8(truncatingIfNeeded: ms),
            0x70, 0, 0x80, 0, 0, 0, 0, 0, 0, 0)
        return JobID(uuid: UUID(uuid: bytes))
    }

    private static let clock = Mutex<(ms: UInt64, counter: UInt16)>((0, 0))

    /// A new, time-ordered id.
    public static func make(now: Date = Date()) -> JobID {
        let wallMs = UInt64(max(0, now.timeIntervalSince1970 * 1000))
        let (ms, counter) = clock.withLock { state -> (UInt64, UInt16) in
            if wallMs > state.ms {
                state = (wallMs, UInt16.random(in: 0..<0x400))  // leave room to count up
            } else if state.counter < 0xFFF {
                state.counter += 1
            } else {
                state = (state.ms + 1, 0)  // counter exhausted: borrow the next millisecond
            }
            return (state.ms, state.counter)
        }
        var rng = SystemRandomNumberGenerator()
        let rand = rng.next() as UInt64
        let bytes: uuid_t = (
            UInt8(truncatingIfNeeded: ms >> 40), UInt8(truncatingIfNeeded: ms >> 32),
            UInt8(truncatingIfNeeded: ms >> 24), UInt8(truncatingIfNeeded: ms >> 16),
            UInt8(truncatingIfNeeded: ms >> 8), UInt8(truncatingIfNeeded: ms),
            0x70 | UInt8(counter >> 8), UInt8(truncatingIfNeeded: counter),
            0x80 | UInt8(truncatingIfNeeded: rand >> 58), UInt8(truncatingIfNeeded: rand >> 48),
            UInt8(truncatingIfNeeded: rand >> 40), UInt8(truncatingIfNeeded: rand >> 32),
            UInt8(truncatingIfNeeded: rand >> 24), UInt8(truncatingIfNeeded: rand >> 16),
            UInt8(truncatingIfNeeded: rand >> 8), UInt8(truncatingIfNeeded: rand)
        )
        return JobID(uuid: UUID(uuid: bytes))
    }
}
