import Logging
import Synchronization

/// Elects the one process of a cluster that runs the duties that must run once (rescuing
/// expired leases, pruning). A holder claims its duty for ``Settings/ttl`` and renews the claim
/// on every ``elect()`` (call it more often than the TTL); a holder that dies is replaced once
/// its claim expires, and one that stops gracefully ``resign()``s, so that a successor takes
/// over at its next election instead of waiting for the claim to expire.
///
/// On a store one machine uses alone (SQLite), every caller is elected.
public final class LeaderElector: Sendable {
    public struct Settings: Sendable {
        /// The name of what is led.
        public var duty = "maintenance"
        /// How long a claim lasts without renewal.
        public var ttl: Duration
        public init(duty: String = "maintenance", ttl: Duration) { self.duty = duty; self.ttl = ttl }
    }

    public let settings: Settings
    public let holder: String
    private let store: any JobStore
    private let logger: Logger
    private let leading = Atomic<Bool>(false)

    public init(store: any JobStore, holder: String, settings: Settings, logger: Logger = Logger(label: "spool.leader")) {
        self.store = store
        self.holder = holder
        self.settings = settings
        self.logger = logger
    }

    /// Whether the last election made this holder the leader.
    public var isLeader: Bool { leading.load(ordering: .relaxed) }

    /// Claims the duty, or renews this holder's claim. A store that cannot be reached elects
    /// no one here (the claim lapses, and whoever reaches the store next takes over).
    @discardableResult
    public func elect() async -> Bool {
        let won: Bool
        do {
            won = try await store.claimLeadership(of: settings.duty, holder: holder, for: settings.ttl)
        } catch {
            logger.warning("leader election failed", metadata: ["duty": "\(settings.duty)", "error": "\(error)"])
            won = false
        }
        if leading.exchange(won, ordering: .relaxed) != won {
            logger.info(won ? "elected leader" : "no longer leader", metadata: ["duty": "\(settings.duty)", "holder": "\(holder)"])
        }
        return won
    }

    /// Gives the duty up, so that another process takes it over at once. Always asks the store
    /// (an election whose answer was lost may still have made this holder the leader); the store
    /// deletes only this holder's claim.
    public func resign() async {
        leading.store(false, ordering: .relaxed)
        do {
            try await store.resignLeadership(of: settings.duty, holder: holder)
            logger.info("resigned as leader", metadata: ["duty": "\(settings.duty)", "holder": "\(holder)"])
        } catch {
            logger.warning("could not resign; the claim will expire", metadata: ["duty": "\(settings.duty)", "error": "\(error)"])
        }
    }
}
