import Testing
@testable import SparseKVServer

/// The cluster bridge's stats schedule, without sockets.
@Suite struct StatsPollTests {
    let t0 = ContinuousClock.now

    @Test func pollsEveryIntervalWithOneRequestInFlight() {
        var p = StatsPoll(interval: .milliseconds(500), timeout: .seconds(2))
        let first = p.due(now: t0, wanted: false)
        #expect(first != nil)
        // Nothing more while one is in flight, even when a scrape wants one.
        #expect(p.due(now: t0 + .milliseconds(600), wanted: true) == nil)
        #expect(p.answered(first!))
        // Answered: the next one waits for the interval, unless a scrape wants it now.
        #expect(p.due(now: t0 + .milliseconds(700), wanted: false) == nil)
        let second = p.due(now: t0 + .milliseconds(700), wanted: true)
        #expect(second != nil && second != first)
        #expect(p.answered(second!))
        #expect(p.due(now: t0 + .milliseconds(1300), wanted: false) != nil)
    }

    @Test func ignoresOtherAndLateAnswers() {
        var p = StatsPoll(interval: .milliseconds(500), timeout: .seconds(2))
        let id = p.due(now: t0, wanted: false)!
        #expect(!p.answered(id + 1))
        #expect(!p.expired(now: t0 + .seconds(1)))
        #expect(p.expired(now: t0 + .seconds(3)))
        // Given up: its late answer is not taken, and a new request may go.
        #expect(!p.answered(id))
        let next = p.due(now: t0 + .seconds(3), wanted: true)
        #expect(next != nil && next != id)
    }

    @Test func anUnsentRequestCanBeRetried() {
        var p = StatsPoll()
        let id = p.due(now: t0, wanted: true)
        #expect(id != nil)
        p.unsent()
        #expect(p.due(now: t0, wanted: true) != nil)
    }

    @Test func statsIDsNeverMeetRequestIDs() {
        var p = StatsPoll()
        #expect(p.due(now: t0, wanted: true)! >= 1 << 62)
    }
}
