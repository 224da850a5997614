import ArgumentParser
import SparseKVEngine

// OpenBLAS picks its kernels when it loads; fix a wrong pick before any work starts.
BLASRuntime.ensureFastKernels()
// Large freed buffers go back to the system (peak RSS follows the live set).
MallocTuning.apply()

/// What AsyncParsableCommand.main does, in an async function: top-level code picks the
/// synchronous overloads, which cannot run the async `serve`, `coordinator` and `worker`.
func runCommand() async {
    do {
        var command = try SparseKVCommand.parseAsRoot()
        if var asyncCommand = command as? any AsyncParsableCommand {
            try await asyncCommand.run()
        } else {
            try command.run()
        }
    } catch {
        SparseKVCommand.exit(withError: error)
    }
}

await runCommand()
