// swift-tools-version:6.0
import Foundation
import PackageDescription

// Targets depend one way: C shims -> sparse coding -> engine -> (cluster) -> CLI. See ../shared/STYLE.md.

// Numeric kernels are compiled for AVX2/FMA/F16C ("haswell": Intel since 2013, AMD since
// Zen); without it Swift emits SSE2 only and the decode kernels run ~2x slower.
// SPARSEKV_TARGET_CPU=x86-64 builds for any x86-64 CPU.
#if arch(x86_64)
let targetCPU = ProcessInfo.processInfo.environment["SPARSEKV_TARGET_CPU"] ?? "haswell"
let cpuFlags = ["-target-cpu", targetCPU]
#else
let cpuFlags: [String] = []
#endif
let optimize: [SwiftSetting] = [.unsafeFlags(["-Ounchecked"] + cpuFlags, .when(configuration: .release))]

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
    ],
    targets: [
        // MARK: - C shims (system libraries found through pkg-config)
        .systemLibrary(
            name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(
            name: "CZMQ", path: "Sources/CZMQ", pkgConfig: "libzmq",
            providers: [.apt(["libzmq3-dev"])]),

        // MARK: - Sparse coding: dictionaries, Matching Pursuit, packed codes (no model, no network)
        .target(
            name: "SparseCoding",
            dependencies: ["CBLAS"],
            path: "Sources/SparseCoding",
            swiftSettings: optimize),

        // MARK: - Model engine: GGUF, tokenizer, forward pass, KV caches, sampling
        .target(
            name: "SparseKVEngine",
            dependencies: [
                "CBLAS", "SparseCoding",
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

        // MARK: - CLI
        .executableTarget(
            name: "sparsekv",
            dependencies: [
                "SparseKVEngine", "SparseKVCluster", "CZMQ",
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
    ]
)
