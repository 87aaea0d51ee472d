import Foundation

/// One queue's figures for one minute, for one tenant, as one process counted them. Each
/// process adds up its own in memory and writes its rows once a minute; readers merge the
/// rows of every process (``StatsBucket/merge(_:from:count:seconds:)``).
public struct QueueMinute: Sendable, Hashable {
    public var tenant: String
    public var queue: String
    /// Minutes since 1970 (UTC).
    public var minute: Int64
    public var completed: Int
    /// Attempts that failed for good (the job went to `failed`).
    public var failed: Int
    /// Attempts that failed and will run again.
    public var retried: Int
    /// From when a job could run (its run-at) to when an attempt started, in milliseconds.
    public var wait: LatencyHistogram
    /// How long attempts ran, in milliseconds.
    public var run: LatencyHistogram

    public init(tenant: String, queue: String, minute: Int64, completed: Int = 0, failed: Int = 0, retried: Int = 0,
                wait: LatencyHistogram = LatencyHistogram(), run: LatencyHistogram = LatencyHistogram()) {
        self.tenant = tenant; self.queue = queue; self.minute = minute
        self.completed = completed; self.failed = failed; self.retried = retried; self.wait = wait; self.run = run
    }

    public static func minute(of date: Date) -> Int64 { Int64((date.timeIntervalSince1970 / 60).rounded(.down)) }
}

/// Counts of durations in fixed buckets (so that processes' figures add up exactly and
/// percentiles can be read from the sum). A percentile reads as its bucket's upper bound.
public struct LatencyHistogram: Sendable, Hashable, Codable {
    /// Upper bounds of the buckets in milliseconds; a last bucket holds everything longer.
    public static let bounds: [Double] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000,
                                          60_000, 300_000, 900_000, 3_600_000, 21_600_000]
    public private(set) var counts: [Int]

    public init() { counts = Array(repeating: 0, count: Self.bounds.count + 1) }

    /// From stored counts; `nil` when they do not fit these buckets.
    public init?(counts: [Int]) {
        guard counts.count == Self.bounds.count + 1, counts.allSatisfy({ $0 >= 0 }) else { return nil }
        self.counts = counts
    }

    public var total: Int { counts.reduce(0, +) }

    public mutating func add(milliseconds: Double) {
        let index = Self.bounds.firstIndex { milliseconds <= $0 } ?? Self.bounds.count
        counts[index] += 1
    }

    public mutating func merge(_ other: LatencyHistogram) {
        for i in counts.indices { counts[i] += other.counts[i] }
    }

    /// The `fraction` (0...1) percentile, in milliseconds; `nil` without samples.
    public func percentile(_ fraction: Double) -> Double? {
        let total = self.total
        guard total > 0 else { return nil }
        let rank = max(1, Int((fraction * Double(total)).rounded(.up)))
        var seen = 0
        for (index, count) in counts.enumerated() {
            seen += count
            if seen >= rank { return index < Self.bounds.count ? Self.bounds[index] : Self.bounds[Self.bounds.count - 1] * 2 }
        }
        return nil
    }
}

/// Figures of a span of time (one or more minutes), merged over processes, tenants and queues.
public struct StatsBucket: Sendable, Hashable {
    public var start: Date
    public var seconds: Int
    public var completed = 0
    public var failed = 0
    public var retried = 0
    public var wait = LatencyHistogram()
    public var run = LatencyHistogram()

    public init(start: Date, seconds: Int) { self.start = start; self.seconds = seconds }

    /// `count` buckets of `minutes` minutes each from minute `from`, every row added to the
    /// bucket its minute falls in (rows outside are ignored).
    public static func merge(_ rows: [QueueMinute], from: Int64, count: Int, minutes: Int) -> [StatsBucket] {
        var buckets = (0..<count).map { StatsBucket(start: Date(timeIntervalSince1970: Double(from + Int64($0 * minutes)) * 60), seconds: minutes * 60) }
        for row in rows {
            let index = Int((row.minute - from) / Int64(minutes))
            guard row.minute >= from, index < count else { continue }
            buckets[index].completed += row.completed
            buckets[index].failed += row.failed
            buckets[index].retried += row.retried
            buckets[index].wait.merge(row.wait)
            buckets[index].run.merge(row.run)
        }
        return buckets
    }
}
