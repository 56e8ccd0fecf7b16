#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// When a job runs: every N seconds (slots aligned to the Unix epoch, so every replica
/// computes the same ones), or on a cron expression evaluated in a time zone.
///
/// Daylight saving time, for cron: a wall-clock time skipped by a spring-forward change runs
/// at the first instant after the gap (once); a time repeated by a fall-back change runs
/// once, at its first occurrence, unless the hour field is `*`, in which case the job keeps
/// its rhythm through both passes of the repeated hour.
public enum JobSchedule: Sendable, Hashable, CustomStringConvertible {
    case every(seconds: Int)
    case cron(CronExpression, timeZone: TimeZone)

    /// `every 15m`, `every 90s`, `every 1h`, or `cron 0 3 * * *` (in `timeZone`).
    public init(_ text: String, timeZone: TimeZone) throws(ScheduleError) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.hasPrefix("every ") {
            let amount = trimmed.dropFirst(6).trimmingCharacters(in: .whitespaces)
            let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
            guard let unit = amount.last, let multiplier = units[unit], let count = Int(amount.dropLast()),
                (1...(366 * 86_400) / multiplier).contains(count)
            else {
                throw ScheduleError("schedule '\(text)': expected 'every N' with s, m, h or d, at most a year, e.g. 'every 15m'")
            }
            self = .every(seconds: count * multiplier)
        } else if trimmed.hasPrefix("cron ") {
            self = .cron(try CronExpression(String(trimmed.dropFirst(5))), timeZone: timeZone)
        } else {
            self = .cron(try CronExpression(trimmed), timeZone: timeZone)
        }
    }

    public var description: String {
        switch self {
        case .every(let seconds):
            if seconds % 86_400 == 0 { return "every \(seconds / 86_400)d" }
            if seconds % 3600 == 0 { return "every \(seconds / 3600)h" }
            if seconds % 60 == 0 { return "every \(seconds / 60)m" }
            return "every \(seconds)s"
        case .cron(let expression, _):
            return "cron \(expression)"
        }
    }

    public var timeZone: TimeZone? {
        if case .cron(_, let zone) = self { return zone }
        return nil
    }

    /// The first slot strictly after `instant` (nil only for a cron that never fires, such
    /// as 30 February).
    public func nextSlot(after instant: Date) -> Date? {
        switch self {
        case .every(let seconds):
            let now = instant.timeIntervalSince1970
            return Date(timeIntervalSince1970: ((now / Double(seconds)).rounded(.down) + 1) * Double(seconds))
        case .cron(let expression, let zone):
            return CronCalendar(expression: expression, zone: zone).next(after: instant)
        }
    }

    /// The slots in `(start, end]`, oldest first, at most `limit` of the newest.
    public func slots(after start: Date, through end: Date, limit: Int = 1000) -> [Date] {
        if case .every(let seconds) = self {
            // Arithmetic: the newest `limit` multiples of the interval in (start, end].
            let step = Double(seconds)
            let last = (end.timeIntervalSince1970 / step).rounded(.down)
            let first = max((start.timeIntervalSince1970 / step).rounded(.down) + 1, last - Double(limit) + 1)
            guard first <= last else { return [] }
            return stride(from: first, through: last, by: 1).map { Date(timeIntervalSince1970: $0 * step) }
        }
        var slots: [Date] = []
        var cursor = start
        while let next = nextSlot(after: cursor), next <= end {
            slots.append(next)
            if slots.count > limit { slots.removeFirst(slots.count - limit) }
            cursor = next
        }
        return slots
    }

    /// The usual time between runs: the interval, or for cron the gap between the next two
    /// firings after `instant`. A job is late when its last success is older than twice this.
    public func typicalInterval(around instant: Date) -> Duration {
        switch self {
        case .every(let seconds):
            return .seconds(seconds)
        case .cron:
            guard let first = nextSlot(after: instant), let second = nextSlot(after: first) else { return .seconds(86_400) }
            return .seconds(Int(second.timeIntervalSince(first).rounded()))
        }
    }
}

/// Cron firing times in a time zone. Wall-clock times are handled as "local seconds": the
/// local date and time encoded as if it were UTC, so calendar arithmetic needs no time zone.
struct CronCalendar {
    let expression: CronExpression
    let zone: TimeZone

    func next(after instant: Date) -> Date? {
        let utc = Int64(instant.timeIntervalSince1970.rounded(.down))
        let local = utc + Int64(zone.secondsFromGMT(for: instant))
        let hours = expression.hours.sorted()
        let minutes = expression.minutes.sorted()
        var day = floorDivide(local, 86_400) - 1  // a day early: DST may map it forward
        let lastDay = day + 366 * 8
        // Wall-clock order is not instant order inside a repeated hour, so once a firing is
        // found, the next few hours of wall-clock times are checked for an earlier instant.
        var best: Int64? = nil
        var searchUntilWall = Int64.max
        while day <= lastDay && day * 86_400 <= searchUntilWall {
            let (_, month, dayOfMonth) = civil(fromDays: day)
            let weekday = Int(((day % 7) + 11) % 7)  // 1970-01-01 was a Thursday (4)
            if expression.matchesDay(month: month, day: dayOfMonth, weekday: weekday) {
                for hour in hours {
                    for minute in minutes {
                        let wall = day * 86_400 + Int64(hour * 3600 + minute * 60)
                        // Far enough behind that no DST shift can bring it after `instant`.
                        if wall < local - 6 * 3600 { continue }
                        if wall > searchUntilWall { break }
                        if let fire = instants(ofWallClock: wall).first(where: { $0 > utc }) {
                            if best == nil { searchUntilWall = wall + 6 * 3600 }
                            best = min(best ?? fire, fire)
                        }
                    }
                }
            }
            day += 1
        }
        return best.map { Date(timeIntervalSince1970: Double($0)) }
    }

    /// The UTC seconds at which the zone's clocks show `wall`: none found means a gap (then
    /// the end of the gap), two means a repeated hour (the first only, unless the hour field
    /// is `*`).
    func instants(ofWallClock wall: Int64) -> [Int64] {
        let offsets = Set([wall - 14 * 3600, wall + 14 * 3600, wall].map { zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double($0))) })
        let valid = offsets.map { wall - Int64($0) }
            .filter { Int64(zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double($0)))) == wall - $0 }
            .sorted()
        if valid.isEmpty {
            // Skipped by a spring-forward change: run when the clocks jump, once.
            let before = Int64(zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(wall - 14 * 3600))))
            let probe = Date(timeIntervalSince1970: Double(wall - before - 86_400))
            guard let transition = zone.nextDaylightSavingTimeTransition(after: probe) else { return [wall - before] }
            return [Int64(transition.timeIntervalSince1970)]
        }
        return expression.hourRestricted ? [valid[0]] : valid
    }
}

private func floorDivide(_ value: Int64, _ divisor: Int64) -> Int64 {
    value >= 0 ? value / divisor : -((-value + divisor - 1) / divisor)
}

/// Year, month (1–12) and day (1–31) of a day count since 1970-01-01 (proleptic Gregorian;
/// H. Hinnant's algorithm).
func civil(fromDays days: Int64) -> (year: Int, month: Int, day: Int) {
    let z = days + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let doe = z - era * 146_097
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let day = doy - (153 * mp + 2) / 5 + 1
    let month = mp < 10 ? mp + 3 : mp - 9
    let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
    return (Int(year), Int(month), Int(day))
}
