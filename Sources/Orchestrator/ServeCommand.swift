import ArgumentParser

/// `fila serve`.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the HTTP API (health, jobs) until SIGTERM or SIGINT.",
        discussion: """
            Listens on $HOST:$PORT (default 0.0.0.0:8080). GET /health answers 200 while the
            process is alive; it does not depend on Postgres, so a database outage never makes
            an orchestrator restart the API. Run `fila migrate` first.

            With ADMIN_TOKEN set (sent as 'Authorization: Bearer TOKEN'): GET /jobs lists the
            jobs with their last and next runs and SLA state, GET /jobs/NAME/executions?limit=N
            their history, and POST /jobs/NAME runs one now and returns its job_executions row
            (404 unknown job, 409 a run still going, 401 without the token).
            """
    )

    @OptionGroup var global: GlobalOptions

    func run() async throws {
        try await ProcessAssembly.run([.api], global: global)
    }
}
