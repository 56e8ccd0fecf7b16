import Foundation
import Testing

@testable import Jobs

@Suite("Schedules: cron expressions and intervals, across DST")
struct ScheduleTests {
    let saoPaulo = TimeZone(identifier: "America/Sao_Paulo")!
    let utc = TimeZone(identifier: "UTC")!

    private func date(_ text: String) -> Date {
        try! Date(text, strategy: .iso8601)
    }

    private func next(_ cron: String, in zone: TimeZone, after instant: String) throws -> Date? {
        try JobSchedule.cron(CronExpression(cron), timeZone: zone).nextSlot(after: date(instant))
    }

    @Test(arguments: [
        ("0 3 * *", "cron '0 3 * *' has 4 fields; expected 5: minute hour day-of-month month day-of-week"),
        ("61 * * * *", "cron '61 * * * *': minute field '61' has 61, outside 0-59"),
        ("* 24 * * *", "cron '* 24 * * *': hour field '24' has 24, outside 0-23"),
        ("x * * * *", "cron 'x * * * *': minute field 'x' has 'x', which is not a number"),
        ("5-1 * * * *", "cron '5-1 * * * *': minute field '5-1' has the range 5-1, which runs backwards"),
        ("*/0 * * * *", "cron '*/0 * * * *': minute field '*/0' has step '0'; expected a whole number above 0"),
        ("0 0 * foo *", "cron '0 0 * foo *': month field 'foo' has 'foo', which is not a number or a name"),
        ("0 0 1,,2 * *", "cron '0 0 1,,2 * *': day of month field '1,,2' has an empty list item"),
    ])
    func aMalformedCronIsRefusedWithItsReason(text: String, reason: String) {
        #expect(throws: ScheduleError(reason)) { try CronExpression(text) }
    }

    @Test func fieldsListsRangesStepsAndNames() throws {
        let cron = try CronExpression("5,35 8-18/5 * jan-mar mon-fri")
        #expect(cron.minutes == [5, 35])
        #expect(cron.hours == [8, 13, 18])
        #expect(cron.months == [1, 2, 3])
        #expect(cron.daysOfWeek == [1, 2, 3, 4, 5])
        #expect(try CronExpression("0 0 * * 7").daysOfWeek == [0])
        #expect(try CronExpression("@daily") .minutes == [0])
        #expect(try CronExpression("10/20 * * * *").minutes == [10, 30, 50])
    }

    @Test func dailyAtThreeInSaoPaulo() throws {
        // -03:00 all year since 2019.
        #expect(try next("0 3 * * *", in: saoPaulo, after: "2026-01-23T10:00:00Z") == date("2026-01-24T06:00:00Z"))
        #expect(try next("0 3 * * *", in: saoPaulo, after: "2026-01-24T05:59:59Z") == date("2026-01-24T06:00:00Z"))
        // Strictly after: the slot itself is not its own next.
        #expect(try next("0 3 * * *", in: saoPaulo, after: "2026-01-24T06:00:00Z") == date("2026-01-25T06:00:00Z"))
    }

    @Test func everyQuarterHourAndMonthEnds() throws {
        #expect(try next("*/15 * * * *", in: utc, after: "2026-01-23T10:07:00Z") == date("2026-01-23T10:15:00Z"))
        #expect(try next("0 0 31 * *", in: utc, after: "2026-04-01T00:00:00Z") == date("2026-05-31T00:00:00Z"))
        #expect(try next("0 12 29 2 *", in: utc, after: "2026-03-01T00:00:00Z") == date("2028-02-29T12:00:00Z"))
        #expect(try next("0 0 30 2 *", in: utc, after: "2026-03-01T00:00:00Z") == nil)
    }

    @Test func dayOfMonthOrDayOfWeekWhenBothAreSet() throws {
        // The 13th, or any Friday. 2026-02-06 is a Friday, before the 13th.
        #expect(try next("0 0 13 * fri", in: utc, after: "2026-02-01T00:00:00Z") == date("2026-02-06T00:00:00Z"))
        #expect(try next("0 0 13 * fri", in: utc, after: "2026-02-06T00:00:00Z") == date("2026-02-13T00:00:00Z"))
        // Only the day of week: Mondays.
        #expect(try next("0 9 * * mon", in: utc, after: "2026-01-23T00:00:00Z") == date("2026-01-26T09:00:00Z"))
    }

    /// São Paulo's last DST started at 00:00 on 2018-11-04 (clocks to 01:00, -03 to -02).
    @Test func aTimeSkippedBySpringForwardRunsOnceWhenTheClocksJump() throws {
        #expect(try next("30 0 * * *", in: saoPaulo, after: "2018-11-03T12:00:00Z") == date("2018-11-04T03:00:00Z"))
        #expect(try next("30 0 * * *", in: saoPaulo, after: "2018-11-04T03:00:00Z") == date("2018-11-05T02:30:00Z"))
        // 01:00 exists (it is the jump's end): the same instant, once.
        #expect(try next("0 1 * * *", in: saoPaulo, after: "2018-11-03T12:00:00Z") == date("2018-11-04T03:00:00Z"))
        // A quarter-hourly job just carries on from 01:00.
        let quarterly = try JobSchedule.cron(CronExpression("*/15 * * * *"), timeZone: saoPaulo)
        #expect(quarterly.slots(after: date("2018-11-04T02:40:00Z"), through: date("2018-11-04T03:30:00Z")) == [
            date("2018-11-04T02:45:00Z"), date("2018-11-04T03:00:00Z"), date("2018-11-04T03:15:00Z"), date("2018-11-04T03:30:00Z"),
        ])
    }

    /// It ended at 00:00 on 2019-02-17 (clocks back to 23:00 on the 16th, -02 to -03): the
    /// hour from 23:00 happened twice.
    @Test func aRepeatedHourRunsFixedTimeJobsOnceAndHourlyJobsThroughBothPasses() throws {
        #expect(try next("30 23 * * *", in: saoPaulo, after: "2019-02-16T12:00:00Z") == date("2019-02-17T01:30:00Z"))
        #expect(try next("30 23 * * *", in: saoPaulo, after: "2019-02-17T01:30:00Z") == date("2019-02-18T02:30:00Z"))
        let halfHourly = try JobSchedule.cron(CronExpression("*/30 * * * *"), timeZone: saoPaulo)
        #expect(halfHourly.slots(after: date("2019-02-17T00:45:00Z"), through: date("2019-02-17T03:00:00Z")) == [
            date("2019-02-17T01:00:00Z"), date("2019-02-17T01:30:00Z"), date("2019-02-17T02:00:00Z"),
            date("2019-02-17T02:30:00Z"), date("2019-02-17T03:00:00Z"),
        ])
        // The day with 25 hours is one interval of a daily job.
        let daily = try JobSchedule.cron(CronExpression("0 12 * * *"), timeZone: saoPaulo)
        #expect(daily.typicalInterval(around: date("2019-02-16T12:00:00Z")) == .seconds(90_000))
    }

    @Test func intervalsAreAlignedToTheEpochSoReplicasAgree() throws {
        let schedule = try JobSchedule("every 15m", timeZone: utc)
        #expect(schedule == .every(seconds: 900))
        #expect(schedule.nextSlot(after: date("2026-01-23T10:07:30Z")) == date("2026-01-23T10:15:00Z"))
        #expect(schedule.nextSlot(after: date("2026-01-23T10:15:00Z")) == date("2026-01-23T10:30:00Z"))
        #expect(schedule.slots(after: date("2026-01-23T10:00:00Z"), through: date("2026-01-23T11:00:00Z")).count == 4)
        // Only the newest slots are kept when a gap is long.
        #expect(schedule.slots(after: date("2026-01-01T00:00:00Z"), through: date("2026-01-23T11:00:00Z"), limit: 3) == [
            date("2026-01-23T10:30:00Z"), date("2026-01-23T10:45:00Z"), date("2026-01-23T11:00:00Z"),
        ])
        #expect(schedule.description == "every 15m")
        #expect(try JobSchedule("every 90s", timeZone: utc).description == "every 90s")
        #expect(try JobSchedule("cron 0 3 * * *", timeZone: saoPaulo).description == "cron 0 3 * * *")
        #expect(throws: ScheduleError("schedule 'every often': expected 'every N' with s, m, h or d, at most a year, e.g. 'every 15m'")) {
            try JobSchedule("every often", timeZone: utc)
        }
    }
}

@Suite("Cron day fields")
struct CronDayFieldTests {
    let utc = TimeZone(identifier: "UTC")!

    private func firings(_ cron: String, from: String, count: Int) throws -> [String] {
        let schedule = JobSchedule.cron(try CronExpression(cron), timeZone: utc)
        var cursor = try Date(from, strategy: .iso8601)
        var days: [String] = []
        for _ in 0..<count {
            guard let next = schedule.nextSlot(after: cursor) else { break }
            days.append(String(next.formatted(.iso8601).prefix(10)))
            cursor = next
        }
        return days
    }

    /// A step in a day field restricts it like any list: odd days, every other weekday.
    @Test func stepsInDayFieldsRestrictTheDays() throws {
        #expect(try firings("0 0 */2 * *", from: "2026-03-01T12:00:00Z", count: 3) == ["2026-03-03", "2026-03-05", "2026-03-07"])
        // Sundays, Tuesdays, Thursdays, Saturdays; 2026-03-01 is a Sunday.
        #expect(try firings("0 9 * * */2", from: "2026-03-01T12:00:00Z", count: 3) == ["2026-03-03", "2026-03-05", "2026-03-07"])
        // Day of month starts with '*': both must match (a Monday among days 1, 11, 21, 31).
        #expect(try firings("0 0 */10 * 1", from: "2026-01-01T00:00:00Z", count: 3) == ["2026-05-11", "2026-06-01", "2026-08-31"])
        #expect(try CronExpression("0 */1 * * *").hourRestricted == false)
        #expect(try CronExpression("0 8-18 * * *").hourRestricted == true)
    }
}
