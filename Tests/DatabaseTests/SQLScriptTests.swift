import Database
import Testing

@Suite("SQLScript splits migration files into statements")
struct SQLScriptTests {
    private func texts(_ sql: String) throws -> [String] {
        try SQLScript(sql).statements.map(\.text)
    }

    @Test func splitsOnSemicolonsAndTrims() throws {
        #expect(try texts("CREATE TABLE a (x int);\n\n  INSERT INTO a VALUES (1) ;\nSELECT 1") == [
            "CREATE TABLE a (x int)", "INSERT INTO a VALUES (1)", "SELECT 1",
        ])
    }

    @Test func ignoresEmptyStatementsAndCommentOnlyTails() throws {
        #expect(try texts(";;\n-- nothing here;\n/* nor; here */\n") == [])
        #expect(try texts("SELECT 1;\n-- trailing comment; with semicolon\n") == ["SELECT 1"])
    }

    @Test func keepsSemicolonsInsideStringsAndIdentifiers() throws {
        #expect(try texts("SELECT 'a;b', 'it''s; fine', \"odd;name\" FROM t; SELECT 2") == [
            "SELECT 'a;b', 'it''s; fine', \"odd;name\" FROM t", "SELECT 2",
        ])
        #expect(try texts(#"SELECT E'back\'slash;'; SELECT 3"#) == [#"SELECT E'back\'slash;'"#, "SELECT 3"])
    }

    @Test func keepsDollarQuotedBodiesWhole() throws {
        let function = """
            CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM 1; RETURN 2;
            END;
            $$;
            CREATE FUNCTION g() RETURNS text LANGUAGE sql AS $body$ SELECT '$$;' $body$;
            SELECT $1::int
            """
        let statements = try texts(function)
        #expect(statements.count == 3)
        #expect(statements[0].hasSuffix("END;\n$$"))
        #expect(statements[1] == "CREATE FUNCTION g() RETURNS text LANGUAGE sql AS $body$ SELECT '$$;' $body$")
        #expect(statements[2] == "SELECT $1::int")
    }

    @Test func keepsSemicolonsInNestedBlockComments() throws {
        #expect(try texts("SELECT /* a; /* nested; */ still; */ 1; SELECT 2") == ["SELECT /* a; /* nested; */ still; */ 1", "SELECT 2"])
    }

    @Test func reportsWhereEachStatementStarts() throws {
        let script = try SQLScript("-- header\n\nSELECT 1;\n/* c */ SELECT\n2;\n\n  'x';")
        #expect(script.statements.map(\.line) == [3, 4, 7])
    }

    @Test func refusesPsqlMetaCommands() throws {
        #expect(throws: SQLScriptError(.metaCommand, line: 2)) {
            try SQLScript("SELECT 1;\n\\i other.sql\n")
        }
        // A backslash inside a string is data, not a meta-command.
        #expect(try texts("COMMENT ON SCHEMA s IS 'see \\dv s.*';") == ["COMMENT ON SCHEMA s IS 'see \\dv s.*'"])
    }

    @Test(arguments: [
        ("SELECT 'open", SQLScriptError.Code.unterminatedString, 1),
        ("SELECT 1;\nSELECT \"open", .unterminatedIdentifier, 2),
        ("SELECT 1;\n\nDO $$ BEGIN", .unterminatedDollarQuote, 3),
        ("/* open /* nested */", .unterminatedComment, 1),
    ])
    func reportsUnterminatedTokensWithTheirLine(sql: String, code: SQLScriptError.Code, line: Int) {
        #expect(throws: SQLScriptError(code, line: line)) { try SQLScript(sql) }
    }

    @Test func splitsTheBundledMigrations() throws {
        #expect(!Migration.bundled.isEmpty)
        for migration in Migration.bundled {
            let script = try SQLScript(migration.sql)
            #expect(!script.statements.isEmpty, "\(migration.identifier) has no statements")
        }
    }
}
