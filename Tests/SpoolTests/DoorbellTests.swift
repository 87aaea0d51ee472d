import Foundation
@testable import SpoolCore
import Testing

@Suite("Doorbell")
struct DoorbellTests {
    @Test("two waiters: a ring wakes both, and one that gives up leaves the other waiting")
    func twoWaiters() async throws {
        let bell = Doorbell()
        let started = ContinuousClock.now
        async let first: Void = bell.wait(timeout: .seconds(30))
        async let second: Void = bell.wait(timeout: .seconds(30))
        #expect(await eventually { bell.waitingCount == 2 })
        bell.ring()
        _ = await (first, second)
        #expect(ContinuousClock.now - started < .seconds(10), "a waiter was not woken by the ring")

        // One waiter is cancelled; the other still hears the next ring.
        let patient = Task { await bell.wait(timeout: .seconds(30)); return ContinuousClock.now }
        let impatient = Task { await bell.wait(timeout: .seconds(30)) }
        #expect(await eventually { bell.waitingCount == 2 })
        impatient.cancel()
        await impatient.value
        #expect(bell.waitingCount == 1)
        let rung = ContinuousClock.now
        bell.ring()
        let woke = await patient.value
        #expect(woke - rung < .seconds(10), "the remaining waiter hung")
    }

    @Test("a ring while nobody waits is kept for the next waiter")
    func ringIsKept() async {
        let bell = Doorbell()
        bell.ring()
        let started = ContinuousClock.now
        await bell.wait(timeout: .seconds(30))
        #expect(ContinuousClock.now - started < .seconds(5))
    }
}
