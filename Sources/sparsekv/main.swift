import SparseKVEngine

// OpenBLAS picks its kernels when it loads; fix a wrong pick before any work starts.
BLASRuntime.ensureFastKernels()
SparseKVCommand.main()
