import ArgumentParser

/// `fila all`: the API, a worker and the scheduler in one process, sharing one pool.
struct AllCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "all",
        abstract: "Run the HTTP API, a worker and the job scheduler in one process until SIGTERM or SIGINT.",
        discussion: """
            For a single machine or development (ops/dev runs it with the sandbox sender). \
            It behaves exactly like `fila serve`, `fila worker` and `fila scheduler` run side \
            by side; in \
            production you may prefer to scale them separately. Takes the worker's options; \
            the sender must be chosen explicitly, as for `fila worker`.
            """
    )

    @OptionGroup var global: GlobalOptions
    @OptionGroup var worker: WorkerOptions

    func run() async throws {
        try await ProcessAssembly.run([.api, .worker, .scheduler], global: global, worker: worker)
    }
}
