import ArgumentParser

struct SparseKVCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sparsekv",
        abstract: "Distributed LLM inference with sparse-coded (CSR) KV caches.",
        discussion: """
            Model and texts live in $SPARSEKV_HOME (default ~/.cache/sparsekv); \
            scripts/setup.sh fetches them. --model may be omitted once the model is there.
            """,
        subcommands: [GenerateCommand.self, ServeCommand.self, PerplexityCommand.self, TokenizeCommand.self, InfoCommand.self,
                      BenchCommand.self, EvalCommand.self, DictCommand.self,
                      CoordinatorCommand.self, WorkerCommand.self, ClusterCommand.self, KeysCommand.self])
}
