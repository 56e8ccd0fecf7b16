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

    /// A condition seen firing less than `resolveAfter` ago is a flap: it stays firing,
    /// quietly, and resolves once it has stayed clear that long.
    @Test func aFlapIsOneEpisode() {
        let resolveAfter = Duration.seconds(120)
        let seen = AlertStateMachine.State(firing: true, lastNotifiedAt: start, lastSeenAt: start.addingTimeInterval(60))
        #expect(AlertStateMachine.decide(seen, firing: false, now: start.addingTimeInterval(120), cooldown: hour, resolveAfter: resolveAfter) == .clearing)
        #expect(AlertStateMachine.decide(seen, firing: true, now: start.addingTimeInterval(150), cooldown: hour, resolveAfter: resolveAfter) == .stillFiring)
        #expect(AlertStateMachine.decide(seen, firing: false, now: start.addingTimeInterval(180), cooldown: hour, resolveAfter: resolveAfter) == .resolve)
        // Without a last sighting there is nothing to wait for.
        let unseen = AlertStateMachine.State(firing: true, lastNotifiedAt: start)
        #expect(AlertStateMachine.decide(unseen, firing: false, now: start.addingTimeInterval(1), cooldown: hour, resolveAfter: resolveAfter) == .resolve)
    }
}
