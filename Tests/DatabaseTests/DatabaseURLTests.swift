import Database
import Testing

@Suite("DatabaseURL parses libpq-style URLs and never shows the password")
struct DatabaseURLTests {
    @Test func parsesAFullURL() throws {
        let url = try DatabaseURL("postgresql://fila:s%40cret@db.internal:6543/fila_prod?sslmode=require&application_name=worker&connect_timeout=3")
        #expect(url.host == "db.internal")
        #expect(url.port == 6543)
        #expect(url.username == "fila")
        #expect(url.password == "s@cret")
        #expect(url.database == "fila_prod")
        #expect(url.sslMode == .require)
        #expect(url.applicationName == "worker")
        #expect(url.connectTimeoutSeconds == 3)
    }

    @Test func appliesLibpqDefaults() throws {
        let url = try DatabaseURL("postgres://fila@localhost")
        #expect(url.port == 5432)
        #expect(url.database == "fila")
        #expect(url.sslMode == .prefer)
        #expect(url.password == nil)
    }

    @Test func takesAUnixSocketDirectory() throws {
        let url = try DatabaseURL("postgres://fila@/fila?host=/var/run/postgresql")
        #expect(url.socketDirectory == "/var/run/postgresql")
        #expect(url.clientConfiguration().unixSocketPath == "/var/run/postgresql/.s.PGSQL.5432")
    }

    @Test func redactsThePassword() throws {
        let url = try DatabaseURL("postgres://fila:hunter2hunter2@db:5432/fila")
        #expect(url.description == "postgres://fila:***@db:5432/fila")
        #expect(!"\(url)".contains("hunter2"))
    }

    @Test(arguments: [
        ("", "is empty"),
        ("not a url", "is not a URL"),
        ("mysql://u@h/db", "has scheme 'mysql'"),
        ("postgres://u@h/db?sslmode=sometimes", "has sslmode 'sometimes'"),
        ("postgres://u@h/db?pool=3", "has unsupported parameter 'pool'"),
        ("postgres://h/db", "has no user name"),
        ("postgres://u@/db", "has no host"),
        ("postgres://u@h:99999/db", "has port 99999"),
        ("postgres://u@h/a/b", "not a single database name"),
        (" postgres://u@h/db", "leading or trailing spaces"),
        ("postgres://u@h/db?connect_timeout=10000000000", "has connect_timeout '10000000000'; expected 1-3600 seconds"),
        ("postgres://u@h/db?connect_timeout=0", "has connect_timeout '0'"),
        ("postgres://u@h/db?connect_timeout=ten", "has connect_timeout 'ten'"),
    ])
    func refusesMalformedURLs(text: String, expected: String) {
        do {
            let url = try DatabaseURL(text)
            Issue.record("accepted \(url)")
        } catch {
            #expect(error.reason.contains(expected), "\(error.reason)")
        }
    }

    @Test func errorMessagesDoNotEchoThePassword() {
        do {
            _ = try DatabaseURL("postgres://u:topsecretpw@h/db?sslmode=bad")
            Issue.record("accepted")
        } catch {
            #expect(!error.reason.contains("topsecretpw"))
        }
    }
}
