// swift-tools-version:6.0
import Foundation
import PackageDescription

// Targets depend one way: C shims -> sparse coding -> engine -> (cluster) -> (HTTP server) -> CLI. See docs/ARCHITECTURE.md §1.

// Numeric kernels are compiled for AVX2/FMA/F16C ("haswell": Intel since 2013, AMD since
// Zen); without it Swift emits SSE2 only and the decode kernels run ~2x slower.
// SPARSEKV_TARGET_CPU=x86-64 builds for any x86-64 CPU.
#if arch(x86_64)
let targetCPU = ProcessInfo.processInfo.environment["SPARSEKV_TARGET_CPU"] ?? "haswell"
let cpuFlags = ["-target-cpu", targetCPU]
// CPUs whose AVX2 kernels (QuantizedMatrix+AVX2.swift) may be compiled in.
let avx2 = ["haswell", "broadwell", "skylake", "skylake-avx512", "icelake-server", "sapphirerapids",
            "znver1", "znver2", "znver3", "znver4", "x86-64-v3", "x86-64-v4"].contains(targetCPU)
let cpuDefines: [SwiftSetting] = avx2 ? [.define("SPARSEKV_AVX2", .when(configuration: .release))] : []
#else
let cpuFlags: [String] = []
let cpuDefines: [SwiftSetting] = []
#endif
let optimize: [SwiftSetting] = [.unsafeFlags(["-Ounchecked"] + cpuFlags, .when(configuration: .release))] + cpuDefines

let package = Package(
    name: "SparseKV",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "sparsekv", targets: ["sparsekv"]),
        .library(name: "SparseKVEngine", targets: ["SparseKVEngine"]),
        .library(name: "SparseKVCluster", targets: ["SparseKVCluster"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.0"..<"5.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.1.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
    ],
    targets: [
        // MARK: - C shims (system libraries found through pkg-config)
        .systemLibrary(
            name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(
            name: "CZMQ", path: "Sources/CZMQ", pkgConfig: "libzmq",
            providers: [.apt(["libzmq3-dev"])]),
        // Header only: mallopt from malloc.h, the spin hint, the AVX-512F correlation kernel, the CSR
        // key kernels on fixed-point atoms (no library).
        .systemLibrary(name: "CShims", path: "Sources/CShims"),

        // MARK: - Sparse coding: dictionaries, Matching Pursuit, packed codes (no model, no network)
        .target(
            name: "SparseCoding",
            dependencies: ["CBLAS", "CShims"],
            path: "Sources/SparseCoding",
            swiftSettings: optimize),

        // MARK: - Model engine: GGUF, tokenizer, forward pass, KV caches, sampling
        .target(
            name: "SparseKVEngine",
            dependencies: [
                "CBLAS", "CShims", "SparseCoding",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: optimize),

        // MARK: - Cluster: wire protocol, ZeroMQ transport, byte accounting (coordinator, worker)
        .target(
            name: "SparseKVCluster",
            dependencies: [
                "SparseKVEngine", "CZMQ",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/SparseKVCluster",
            swiftSettings: optimize),

        // MARK: - HTTP server: OpenAI-compatible API, server-sent events, Prometheus metrics
        .target(
            name: "SparseKVServer",
            dependencies: [
                "SparseKVEngine", "SparseKVCluster",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/SparseKVServer",
            swiftSettings: optimize),

        // MARK: - CLI
        .executableTarget(
            name: "sparsekv",
            dependencies: [
                "SparseKVEngine", "SparseKVCluster", "SparseKVServer", "CZMQ",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: optimize),

        // MARK: - Tests
        .testTarget(
            name: "SparseCodingTests",
            dependencies: ["SparseCoding"]),
        .testTarget(
            name: "SparseKVEngineTests",
            dependencies: ["SparseKVEngine"],
            resources: [.copy("Fixtures")]),
        .testTarget(
            name: "SparseKVClusterTests",
            dependencies: ["SparseKVCluster", "SparseKVEngine", "CZMQ"]),
        .testTarget(
            name: "SparseKVServerTests",
            dependencies: ["SparseKVServer", "SparseKVEngine"]),
    ]
)
