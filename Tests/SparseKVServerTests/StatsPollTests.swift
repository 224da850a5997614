import Testing
@testable import SparseKVServer

/// The cluster bridge's stats schedule, without sockets.
@Suite struct StatsPollTests {
    let t0 = ContinuousClock.now

    @Test func pollsEveryIntervalWithOneRequestInFlight() throws {
        var p = StatsPoll(interval: .milliseconds(500), timeout: .seconds(2))
        let firstDue = p.due(now: t0, wanted: false)
        let first = try #require(firstDue)
        // Nothing more while one is in flight, even when a scrape wants one.
        let whileInFlight = p.due(now: t0 + .milliseconds(600), wanted: true)
        #expect(whileInFlight == nil)
        let took = p.answered(first)
        #expect(took)
        // Answered: the next one waits for the interval, unless a scrape wants it now.
        let early = p.due(now: t0 + .milliseconds(300), wanted: false)
        #expect(early == nil)
        let secondDue = p.due(now: t0 + .milliseconds(300), wanted: true)
        let second = try #require(secondDue)
        #expect(second != first)
        let tookSecond = p.answered(second)
        #expect(tookSecond)
        let notYet = p.due(now: t0 + .milliseconds(700), wanted: false)
        #expect(notYet == nil)
        let onTime = p.due(now: t0 + .milliseconds(800), wanted: false)
        #expect(onTime != nil)
    }

    @Test func ignoresOtherAndLateAnswers() throws {
        var p = StatsPoll(interval: .milliseconds(500), timeout: .seconds(2))
        let idDue = p.due(now: t0, wanted: false)
        let id = try #require(idDue)
        let other = p.answered(id + 1)
        #expect(!other)
        let soon = p.expired(now: t0 + .seconds(1))
        #expect(!soon)
        let late = p.expired(now: t0 + .seconds(3))
        #expect(late)
        // Given up: its late answer is not taken, and a new request may go.
        let lateAnswer = p.answered(id)
        #expect(!lateAnswer)
        let nextDue = p.due(now: t0 + .seconds(3), wanted: true)
        let next = try #require(nextDue)
        #expect(next != id)
    }

    @Test func anUnsentRequestCanBeRetried() {
        var p = StatsPoll()
        let id = p.due(now: t0, wanted: true)
        #expect(id != nil)
        p.unsent()
        let again = p.due(now: t0, wanted: true)
        #expect(again != nil)
    }

    @Test func statsIDsNeverMeetRequestIDs() throws {
        var p = StatsPoll()
        let idDue = p.due(now: t0, wanted: true)
        let id = try #require(idDue)
        #expect(id >= 1 << 62)
    }
}
