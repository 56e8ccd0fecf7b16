import Foundation
import Observability
import Testing

/// The notification rules alone, with instants as parameters.
struct AlertStateMachineTests {
    private let start = Date(timeIntervalSince1970: 1_769_000_000)
    private let hour = Duration.seconds(3600)

    @Test func theFirstFiringNotifies() {
        #expect(AlertStateMachine.decide(.init(), firing: true, now: start, cooldown: hour) == .fire)
    }

    @Test func aConditionStillFiringNotifiesAgainOnlyAfterTheCooldown() {
        let notified = AlertStateMachine.State(firing: true, lastNotifiedAt: start)
        #expect(AlertStateMachine.decide(notified, firing: true, now: start.addingTimeInterval(3599), cooldown: hour) == .stillFiring)
        #expect(AlertStateMachine.decide(notified, firing: true, now: start.addingTimeInterval(3600), cooldown: hour) == .renotify)
        // A clock that reads earlier than the last notification (another replica's) stays quiet.
        #expect(AlertStateMachine.decide(notified, firing: true, now: start.addingTimeInterval(-5), cooldown: hour) == .stillFiring)
    }

    @Test func aClearedConditionResolvesOnceAndThenStaysQuiet() {
        let notified = AlertStateMachine.State(firing: true, lastNotifiedAt: start)
        #expect(AlertStateMachine.decide(notified, firing: false, now: start.addingTimeInterval(60), cooldown: hour) == .resolve)
        let resolved = AlertStateMachine.State(firing: false, lastNotifiedAt: start.addingTimeInterval(60))
        #expect(AlertStateMachine.decide(resolved, firing: false, now: start.addingTimeInterval(120), cooldown: hour) == .none)
        #expect(AlertStateMachine.decide(resolved, firing: true, now: start.addingTimeInterval(180), cooldown: hour) == .fire)
    }
}
