#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// A five-field cron expression: minute, hour, day of month, month, day of week.
///
/// Fields accept `*`, numbers, ranges (`1-5`), lists (`1,15`), steps (`*/15`, `8-18/2`) and
/// the names `jan`–`dec` and `sun`–`sat` (day of week 0 and 7 are both Sunday). The macros
/// `@yearly`, `@monthly`, `@weekly`, `@daily` and `@hourly` are accepted. As in Vixie cron,
/// when both day of month and day of week are restricted, a day matching either one fires.
///
/// ```swift
/// let daily = try CronExpression("0 3 * * *")   // every day at 03:00
/// ```
public struct CronExpression: Sendable, Hashable, CustomStringConvertible {
    public let minutes: Set<Int>
    public let hours: Set<Int>
    public let daysOfMonth: Set<Int>
    public let months: Set<Int>
    /// 0 (Sunday) to 6.
    public let daysOfWeek: Set<Int>
    let dayOfMonthRestricted: Bool
    let dayOfWeekRestricted: Bool
    /// A specific-hours job runs once in an hour that a change from daylight saving time
    /// repeats; an every-hour job keeps its rhythm through both passes.
    let hourRestricted: Bool
    /// The expression as written.
    public let description: String

    public init(_ text: String) throws(ScheduleError) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        let macros = [
            "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
            "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
        ]
        let expanded = macros[trimmed.lowercased()] ?? trimmed
        let fields = expanded.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else {
            throw ScheduleError("cron '\(text)' has \(fields.count) fields; expected 5: minute hour day-of-month month day-of-week")
        }
        let monthNames = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
        let dayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
        minutes = try Self.parse(fields[0], name: "minute", range: 0...59, names: [:], in: text)
        hours = try Self.parse(fields[1], name: "hour", range: 0...23, names: [:], in: text)
        daysOfMonth = try Self.parse(fields[2], name: "day of month", range: 1...31, names: [:], in: text)
        months = try Self.parse(
            fields[3], name: "month", range: 1...12,
            names: Dictionary(uniqueKeysWithValues: monthNames.enumerated().map { ($1, $0 + 1) }), in: text
        )
        let weekdays = try Self.parse(
            fields[4], name: "day of week", range: 0...7,
            names: Dictionary(uniqueKeysWithValues: dayNames.enumerated().map { ($1, $0) }), in: text
        )
        daysOfWeek = Set(weekdays.map { $0 == 7 ? 0 : $0 })
        dayOfMonthRestricted = !fields[2].hasPrefix("*")
        dayOfWeekRestricted = !fields[4].hasPrefix("*")
        hourRestricted = hours.count < 24
        description = trimmed
    }

    /// Whether a calendar day (month 1–12, day 1–31, weekday 0 = Sunday) is a firing day.
    /// Both day fields always count; only when both are restricted (neither starts with `*`)
    /// does a day matching either one fire, as in Vixie cron: `0 0 */2 * *` is odd days.
    func matchesDay(month: Int, day: Int, weekday: Int) -> Bool {
        guard months.contains(month) else { return false }
        if dayOfMonthRestricted && dayOfWeekRestricted {
            return daysOfMonth.contains(day) || daysOfWeek.contains(weekday)
        }
        return daysOfMonth.contains(day) && daysOfWeek.contains(weekday)
    }

    private static func parse(_ field: String, name: String, range: ClosedRange<Int>, names: [String: Int], in text: String) throws(ScheduleError) -> Set<Int> {
        func fail(_ reason: String) -> ScheduleError {
            ScheduleError("cron '\(text)': \(name) field '\(field)' \(reason)")
        }
        func value(_ token: Substring) throws(ScheduleError) -> Int {
            if let number = Int(token) {
                guard range.contains(number) else { throw fail("has \(number), outside \(range.lowerBound)-\(range.upperBound)") }
                return number
            }
            if let named = names[token.lowercased()] { return named }
            throw fail("has '\(token)', which is not a number\(names.isEmpty ? "" : " or a name")")
        }
        var result = Set<Int>()
        for part in field.split(separator: ",", omittingEmptySubsequences: false) {
            guard !part.isEmpty else { throw fail("has an empty list item") }
            let pieces = part.split(separator: "/", omittingEmptySubsequences: false)
            guard pieces.count <= 2 else { throw fail("has more than one '/'") }
            var step = 1
            if pieces.count == 2 {
                guard let parsed = Int(pieces[1]), parsed > 0 else { throw fail("has step '\(pieces[1])'; expected a whole number above 0") }
                step = parsed
            }
            let base = pieces[0]
            let lower: Int
            let upper: Int
            if base == "*" {
                lower = range.lowerBound
                upper = range.upperBound
            } else if let dash = base.firstIndex(of: "-") {
                lower = try value(base[..<dash])
                upper = try value(base[base.index(after: dash)...])
                guard lower <= upper else { throw fail("has the range \(lower)-\(upper), which runs backwards") }
            } else {
                lower = try value(base)
                // "5/15" means from 5 to the end in steps of 15.
                upper = pieces.count == 2 ? range.upperBound : lower
            }
            result.formUnion(stride(from: lower, through: upper, by: step))
        }
        return result
    }
}

/// A schedule that cannot be parsed, or a time zone that does not exist.
public struct ScheduleError: Error, Sendable, Hashable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
